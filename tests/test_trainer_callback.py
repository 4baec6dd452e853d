"""LlamabenchCallback in a transformers Trainer: a tiny LLaMA trained a few steps on CPU logs, through the
trainer's own logging, the numbers `llamabench run` gives on the checkpoint the trainer saved at that step."""

import pandas as pd
import torch
from conftest import byte_tokenizer, tiny_llama
from transformers import Trainer, TrainerCallback, TrainingArguments

from llamabench.cli.app import main
from llamabench.training.trainer_callback import LlamabenchCallback


class Batches(torch.utils.data.Dataset):
    def __init__(self, n: int):
        generator = torch.Generator().manual_seed(7)
        self.rows = torch.randint(0, 256, (n, 24), generator=generator)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


class Logged(TrainerCallback):
    """What the trainer hands its logging integrations (W&B, TensorBoard, ... get exactly this)."""

    def __init__(self):
        self.logs: list[tuple[int, dict]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))


def test_logged_metrics_equal_a_cli_run_on_the_saved_checkpoint(tmp_path, data_dir, notes_file):
    args = TrainingArguments(
        output_dir=str(tmp_path / "train"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=3e-2,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=tiny_llama(0).train(), args=args, train_dataset=Batches(8), processing_class=byte_tokenizer()
    )
    settings = {"batch_size": 1, "data_dir": data_dir, "no_cache": True}
    logged = Logged()
    trainer.add_callback(logged)
    trainer.add_callback(
        LlamabenchCallback(trainer, ["qa"], every=2, limit=2, text=[str(notes_file)], text_format="lines", **settings)
    )
    trainer.train()
    ours = {step: logs for step, logs in logged.logs if any(key.startswith("llamabench/") for key in logs)}
    assert sorted(ours) == [2, 3]  # every 2 steps, and at the end
    argv = ["run", "--model", str(tmp_path / "train" / "checkpoint-2"), "--tasks", "qa", "--limit", "2"]
    argv += ["--text", str(notes_file), "--text-format", "lines", "--batch-size", "1", "--no-cache"]
    assert main([*argv, "--data-dir", str(data_dir), "--output-dir", str(tmp_path)]) == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("checkpoint-2-")]
    reference = pd.read_csv(folder / "results.csv")
    expected = {f"llamabench/{row.task}/{row.metric}": row.value for row in reference.itertuples()}
    assert {key: ours[2][key] for key in expected} == expected
    perplexity = next(key for key in expected if key.endswith("/word_perplexity"))
    assert ours[3][perplexity] != ours[2][perplexity]  # training moved the model between the two evaluations
    assert trainer.model.training  # training mode is back after each evaluation
