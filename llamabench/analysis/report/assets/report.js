(() => {
  const data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  const table = document.getElementById("leaderboard");
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  const keys = data.columns.map((c) => c.key);
  const sortValue = (index, key) => {
    const row = data.rows[index];
    if (key === "label") return row.label;
    if (key === "x") return row.x;
    if (key === "run_id") return row.runId;
    return row.values[keys.indexOf(key)];
  };
  const sortBy = (th) => {
    const key = th.dataset.key;
    const column = keys.indexOf(key);
    const current = th.getAttribute("aria-sort");
    const descending = current ? current === "ascending" : column >= 0 && data.columns[column].higherIsBetter;
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const va = sortValue(Number(a.dataset.index), key);
      const vb = sortValue(Number(b.dataset.index), key);
      if (va === null || vb === null) return (va === null) - (vb === null);
      const order = typeof va === "string" ? va.localeCompare(vb) : va - vb;
      return descending ? -order : order;
    });
    rows.forEach((row) => body.appendChild(row));
    headers.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  };
  headers.forEach((th) => {
    th.addEventListener("click", () => sortBy(th));
    th.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(th); }
    });
  });
})();
