"""Training throughput on one GPU: snaketune trials (1, 4, 8 sharing the GPU) against plain TRL.

The seed's trial shape: the SmolLM2-135M architecture (bench/gpu/smollm2-135m-config.json, random
weights: the real checkpoint is too large to send to a device machine), batch 16, sequence 512,
bf16, full fine-tuning (`--peft lora` for the seed's LoRA on q_proj/v_proj), chat rows of about
512 tokens. In the same run:

- plain TRL: one `SFTTrainer` in one process on the same model, rows and training arguments, the way
  `oumi tune` trains a trial (the baseline, and ../shared/bench/gpu_anchor's 20.8k tokens/s);
- snaketune: a study of k trials through the real Snakefile with `trials_per_gpu: k` and
  `--resources gpu=1`, for each k of --share, so k trials train side by side on the GPU.

Throughput is measured the same way in both: tokens (TRL's cumulative num_tokens) per second
between the first log at or after --warmup steps and the last log of training, from time-stamped
log rows (a trial's logs/loss_curve.jsonl). Model loading, data preparation and the final
checkpoint are outside that window; the GPU's total is the sum over the trials sharing it.
Appends to bench/RESULTS.md.

    python bench/gpu_throughput.py [--share 1 4 8] [--steps 100] [--peft none|lora]

On a CPU (smoke test of the script itself): --model-config tests/assets/tiny-llama/config.json
--share 1 2 --steps 6 --warmup 2 --batch 2 --seq 64 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, append_results, run_snakemake

TOKENIZER = REPO / "tests" / "assets" / "tiny-llama"  # SmolLM2's tokenizer and chat template
LOG_EVERY = 5

PLAIN_TRL = r'''
import json, sys, time
import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer
a = json.loads(sys.argv[1])
torch.manual_seed(0)  # random weights, initialised as snaketune's prepare_model does
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(a["model"]), dtype=torch.float32)
model = model.to(getattr(torch, a["dtype"]))
tokenizer = AutoTokenizer.from_pretrained(a["model"])
data = load_dataset("json", data_files=a["train"], split="train")
class Log(TrainerCallback):  # the same time-stamped rows as a snaketune trial's loss_curve.jsonl
    def on_log(self, args, state, control, logs=None, **kw):
        with open(a["curve"], "a") as f:
            f.write(json.dumps({"step": state.global_step, "time": time.time(), **(logs or {})}) + "\n")
cpu = {} if torch.cuda.is_available() else {"use_cpu": True, "bf16": False}  # as snaketune does on a CPU
config = SFTConfig(output_dir=a["out"], report_to="none", save_strategy="no", seed=0, max_length=a["seq"],
                   **a["training"], **cpu)
peft = LoraConfig(task_type="CAUSAL_LM", **a["lora"]) if a["lora"] else None
trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft,
                     callbacks=[Log()])
trainer.train()
'''


def throughput(curve: Path, warmup: int) -> dict:
    """Tokens per second between the first log at step >= warmup and the last training log."""
    from snaketune.layout import read_loss_curve

    rows = [r for r in read_loss_curve(curve) if "num_tokens" in r and "time" in r]
    start = next(r for r in rows if r["step"] >= warmup)
    end = rows[-1]
    tokens = float(end["num_tokens"]) - float(start["num_tokens"])
    return {"tokens": tokens, "seconds": end["time"] - start["time"], "start": start["time"], "end": end["time"],
            "tokens_per_s": tokens / (end["time"] - start["time"])}


def make_model_dir(workdir: Path, model_config: Path) -> Path:
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_config, model_dir / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / name, model_dir / name)
    return model_dir


def make_rows(workdir: Path, n_rows: int, seq: int) -> dict:
    """Chat rows of about `seq` tokens of real tokenizer output (as the GPU anchor makes them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    rng = random.Random(0)
    words = [tokenizer.decode([i]).strip() or "x" for i in range(1000, 6000)]
    half = int(seq * 0.7) // 2
    paths = {}
    for split, n in (("train", n_rows), ("validation", 16)):
        paths[split] = workdir / "data" / f"{split}.jsonl"
        paths[split].parent.mkdir(parents=True, exist_ok=True)
        with open(paths[split], "w") as f:
            for _ in range(n):
                f.write(json.dumps({"messages": [
                    {"role": "user", "content": " ".join(rng.choices(words, k=half))},
                    {"role": "assistant", "content": " ".join(rng.choices(words, k=half))}]}) + "\n")
    return paths


# The seed's LoRA, in Oumi's names (snaketune) and in PEFT's (plain TRL).
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj"]}
LORA_PEFT = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def plain_trl(workdir: Path, model_dir: Path, rows: dict, args) -> dict:
    out = workdir / "plain_trl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = {"model": str(model_dir), "dtype": args.dtype, "train": str(rows["train"]), "seq": args.seq,
            "out": str(out), "curve": str(out / "curve.jsonl"), "lora": LORA_PEFT if args.peft == "lora" else {},
            "training": training_settings(args)}
    subprocess.run([sys.executable, "-c", PLAIN_TRL, json.dumps(spec)], check=True)
    return throughput(out / "curve.jsonl", args.warmup)


def training_settings(args) -> dict:
    return {"per_device_train_batch_size": args.batch, "max_steps": args.steps, "logging_steps": LOG_EVERY,
            "learning_rate": 1e-4}


def snaketune_study(workdir: Path, model_dir: Path, rows: dict, share: int, args) -> dict:
    study_dir = workdir / f"snaketune_{share}"
    shutil.rmtree(study_dir, ignore_errors=True)
    training = {"trainer_type": "TRL_SFT", **training_settings(args)}
    training.pop("learning_rate")
    config = {
        "model": {"model_name": str(model_dir), "load_pretrained_weights": False, "model_max_length": args.seq,
                  "torch_dtype_str": args.dtype},
        "data": {"train": {"datasets": [{"dataset_name": str(rows["train"]), "split": "train"}]},
                 "validation": {"datasets": [{"dataset_name": str(rows["validation"]), "split": "train"}]}},
        "tuning": {
            "n_trials": share, "study_name": "throughput", "seed": 0, "output_dir": "study",
            "tuner_sampler": "RandomSampler", "trials_per_gpu": share,
            # learning_rate does not change the step's cost; tuned so that each trial is a real trial
            "tunable_training_params": {"learning_rate": {"type": "loguniform", "low": 5e-5, "high": 2e-4}},
            "fixed_training_params": training,
            "fixed_peft_params": LORA if args.peft == "lora" else {},
            "evaluation_metrics": ["eval_loss"], "evaluation_direction": ["minimize"],
        },
    }
    run_snakemake(study_dir, config, "--until", "prepare_data", cores=args.cores)  # and the model; untimed
    run_snakemake(study_dir, config, "--until", "trial", "--resources", "gpu=1", cores=args.cores)
    from snaketune.layout import StudyLayout, TrialFiles

    trials = [throughput(TrialFiles(trial_dir).loss_curve, args.warmup)
              for trial_dir in StudyLayout(study_dir / "study").find_trial_dirs()]
    assert len(trials) == share, f"{len(trials)} trial curves for {share} trials in {study_dir}"
    overlap = min(t["end"] for t in trials) - max(t["start"] for t in trials)
    return {"share": share, "per_trial": sum(t["tokens_per_s"] for t in trials) / share,
            "gpu_total": sum(t["tokens_per_s"] for t in trials),
            # sum of rates counts only while all trials ran together: say how much they overlapped
            "overlap": overlap / max(t["seconds"] for t in trials)}


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU: a smoke test)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--peft", choices=["none", "lora"], default="none")
    parser.add_argument("--model-config", type=Path, default=REPO / "bench" / "gpu" / "smollm2-135m-config.json")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "gpu")
    args = parser.parse_args()
    if args.warmup >= args.steps - LOG_EVERY:
        parser.error("--warmup must leave at least one log interval before --steps")

    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir = make_model_dir(args.workdir, args.model_config)
    rows = make_rows(args.workdir, args.batch * args.steps + 8, args.seq)
    started = time.time()
    base = plain_trl(args.workdir, model_dir, rows, args)
    print(json.dumps({"plain_trl": base}), flush=True)
    studies = []
    for share in args.share:
        studies.append(snaketune_study(args.workdir, model_dir, rows, share, args))
        print(json.dumps(studies[-1]), flush=True)

    lines = [f"Device: {device_name()}. {args.batch} x {args.seq} tokens per step, {args.dtype}, "
             f"peft {args.peft}, {args.steps} steps per trial, throughput from step {args.warmup} on. "
             f"Whole run {time.time() - started:.0f} s.\n",
             "| run | trials on the GPU | tokens/s per trial | tokens/s on the GPU | / plain TRL | overlap |",
             "|---|---|---|---|---|---|",
             f"| plain TRL SFTTrainer, one process | 1 | {base['tokens_per_s']:,.0f} | {base['tokens_per_s']:,.0f} "
             "| 1.00 | |"]
    for s in studies:
        lines.append(f"| snaketune, trials_per_gpu {s['share']} | {s['share']} | {s['per_trial']:,.0f} | "
                     f"{s['gpu_total']:,.0f} | {s['gpu_total'] / base['tokens_per_s']:.2f} | {s['overlap']:.2f} |")
    single = next((s for s in studies if s["share"] == 1), None)
    best = max(studies, key=lambda s: s["gpu_total"])
    lines.append("\nGoals: one snaketune trial at least 0.98x plain TRL: "
                 + (f"{single['gpu_total'] / base['tokens_per_s']:.2f}x" if single else "not run")
                 + f"; the GPU's total at least 5x: {best['gpu_total'] / base['tokens_per_s']:.2f}x "
                 f"(trials_per_gpu {best['share']}). Overlap: the share of the longest trial's measured "
                 "window in which all trials trained together.")
    append_results("GPU throughput", "gpu_throughput.py", lines)


if __name__ == "__main__":
    main()
