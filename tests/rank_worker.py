"""One rank of test_distributed.py, launched by torchrun with 2 gloo ranks: trains a tiny LLaMA a few steps (DDP or
FSDP2), evaluates it in memory, saves the checkpoint, and records what each rank saw under OUT.

    python -m torch.distributed.run --nproc-per-node 2 tests/rank_worker.py ddp|fsdp OUT DATA_DIR NOTES

Tasks: SQuAD (generation) and the perplexity of the lines of NOTES (a text file).
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import byte_tokenizer, tiny_llama

import llamabench
from llamabench.distributed import agree
from llamabench.errors import LlamabenchError

SEED = 3


def train(model, steps: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(100 + dist.get_rank())  # each rank its own data, as in training
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, 256, (2, 16), generator=generator)
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def full_model(model, mode: str):
    """A plain single-process copy of the trained weights, on rank 0 (which saves it); a collective for FSDP."""
    if mode == "ddp":
        return model.module
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:  # cpu_offload gathers the full weights on rank 0 only
        return None
    plain = tiny_llama(SEED)
    plain.load_state_dict(state)
    return plain


def main(mode: str, out: Path, data_dir: Path, notes: Path) -> None:
    tasks = {"tasks": ["qa"], "text": [str(notes)], "text_format": "lines", "data_dir": data_dir, "no_cache": True}
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, tokenizer = tiny_llama(SEED), byte_tokenizer()
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    train(model, 2)
    report = {"agreed": agree(lambda: rank, "returning the rank")}  # each rank keeps its own result
    for batch_size in (1, "auto"):
        run = llamabench.evaluate_model(model, tokenizer, step=2, limit=2, batch_size=batch_size, **tasks)
        report[str(batch_size)] = {
            "values": {f"{row.task}/{row.metric}": row.value for row in run.results.itertuples()},
            "ranks": len(run.manifest["backend"]["ranks"]),
            "layout": run.manifest["in_memory"]["layout"],
            "training": model.training,
        }
    plain = full_model(model, mode)
    if rank == 0:
        plain.save_pretrained(out / "ckpt")
        tokenizer.save_pretrained(out / "ckpt")
    train(model, 1)  # training goes on after an evaluation
    if mode == "ddp":  # a rank whose forward fails: every rank raises the same one-line error, none hangs
        if rank == 1:
            model.module.model.layers[0].register_forward_hook(lambda *_: 1 / 0)
        try:
            llamabench.evaluate_model(model, tokenizer, limit=2, **tasks)
        except LlamabenchError as exc:
            report["failure"] = str(exc)
        with torch.no_grad():  # ranks whose replicas differ would each score its share with another model
            model.module.model.norm.weight[0] += rank
        try:
            llamabench.evaluate_model(model, tokenizer, limit=2, **tasks)
        except LlamabenchError as exc:
            report["diverged"] = str(exc)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
