"""The memory-aware token budget of --batch-size auto, checked against hand computation."""

from llamabench.backends.hf.budget import BudgetInputs, token_budget

# A made-up model: 2 layers, hidden 100, MLP 250, fp32, vocabulary 1000, 100 MB of weights, 1 GB free.
CONFIG = BudgetInputs(
    free_bytes=1_000_000_000,
    param_bytes=100_000_000,
    layers=2,
    hidden=100,
    intermediate=250,
    vocab=1000,
    dtype_bytes=4,
    logit_rows=2048,
    cap=None,
)


def test_budget_is_the_hand_computed_token_count():
    # usable: 0.65 × 1e9 = 650,000,000; minus weights 100,000,000; minus logits 2 × 2048 × 1000 × 4 = 16,384,000
    # → 533,616,000 bytes. Per token: 4 × (2 × 100 + 4 × 100 + 3 × 250) = 5,400 bytes. 533,616,000 / 5,400 = 98,817.8
    assert token_budget(CONFIG) == 98_817


def test_cpu_cap_and_floor():
    assert token_budget(BudgetInputs(**{**CONFIG.__dict__, "cap": 8192})) == 8192
    assert token_budget(BudgetInputs(**{**CONFIG.__dict__, "free_bytes": 50_000_000})) == 1  # the OOM net takes over


def test_auto_batch_size_records_the_budget_and_its_inputs(tiny_backend):
    budget = tiny_backend().describe()["token_budget"]
    assert budget["tokens"] == 8192  # the CPU cap: far below what a 2-layer, 48-wide model could fit
    assert budget["inputs"]["layers"] == 2 and budget["inputs"]["hidden"] == 48
    assert budget["inputs"]["intermediate"] == 96 and budget["inputs"]["vocab"] == 258


def test_available_ram_reads_meminfo(tmp_path, monkeypatch):
    from llamabench.backends.hf import budget

    (tmp_path / "meminfo").write_text("MemTotal:       16000000 kB\nMemAvailable:    2000000 kB\n")
    monkeypatch.setattr(budget, "MEMINFO", tmp_path / "meminfo")
    assert budget.available_ram() == 2_000_000 * 1024
