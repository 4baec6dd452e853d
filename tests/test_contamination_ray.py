"""The contamination scan on a real local Ray cluster (``--ray``) against the same scan in one process: the two
paths of our code give the same tables. Run under the heavy lock (it starts Ray)."""

from __future__ import annotations

import pandas as pd
import pytest

from llamabench.cli.app import main
from llamabench.contamination.result import read_contamination

ray = pytest.importorskip("ray")


def test_scan_on_ray_equals_one_process(tmp_path, data_dir):
    unrelated = (data_dir / "wikitext2_raw_test" / "wiki.test.raw").read_text()
    notes = tmp_path / "notes.txt"
    long_lines = [line for line in unrelated[:150_000].splitlines() if len(line) > 300]
    picked = [
        long_lines[0],
        long_lines[-1],
        "A line of our own that no corpus holds, long enough to be looked for at all.",
    ]
    notes.write_text("\n".join(picked) + "\n")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(unrelated[:200_000])
    (corpus / "b.txt").write_text(unrelated[200_000:400_000])
    base = ["contamination", "--corpus", str(corpus), "--text", str(notes), "--text-format", "lines"]
    folders = {}
    for name, flags in {"one": ["--workers", "1"], "ray": ["--ray", "local"]}.items():
        ray.shutdown()
        assert main([*base, *flags, "--output-dir", str(tmp_path / name)]) == 0
        (folders[name],) = (tmp_path / name).iterdir()
    ray.shutdown()
    one, one_manifest = read_contamination(folders["one"])
    on_ray, ray_manifest = read_contamination(folders["ray"])
    assert one.keys() == on_ray.keys()
    for task in one:
        pd.testing.assert_frame_equal(one[task], on_ray[task])
    (table,) = one.values()
    first = table[table.min_length == 10].reset_index(drop=True)
    assert list(first.dirty) == [True, True, False]  # the two lines from the corpus, and ours
    assert ray_manifest["scan"]["ray"] == "local" and ray_manifest["scan"]["units"] == one_manifest["scan"]["units"]
    assert [f["tokens"] for f in ray_manifest["corpus"]] == [f["tokens"] for f in one_manifest["corpus"]]
