"""Per-sample files: one per task, whatever the task names."""

import pandas as pd

from llamabench.records.results import RunResult, read_run, results_frame, sample_file_stems, write_run


def test_sample_files_never_collide(tmp_path):
    names = ["lm_eval:x", "lm_eval_x", "Squad", "squad", "a/b", "a_b"]
    stems = sample_file_stems(names)
    assert len({stem.casefold() for stem in stems.values()}) == len(names)
    frames = {name: pd.DataFrame({"doc_id": [name]}) for name in names}
    row = {"task": names[0], "metric": "acc", "value": 1.0}
    run = RunResult(results_frame([row]), frames, {"model": "m", "run_id": "r1", "started": "2026-01-01"})
    back = read_run(write_run(run, tmp_path))
    assert {task: frame.doc_id.tolist() for task, frame in back.samples.items()} == {n: [n] for n in names}
