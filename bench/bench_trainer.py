"""Benchmark TensorGuard's LoRA trainer against a plain peft loop, same model, same data.

The baseline is the canonical minimal Hugging Face + peft recipe, written here:
``get_peft_model``, texts tokenised once, a shuffled ``DataLoader`` with
``DataCollatorForLanguageModeling(mlm=False)`` (pads each batch to its longest text,
padding masked out of the labels), ``model(**batch).loss``, AdamW. Both sides train
the same base model on the same site's texts with the same LoRA shape, steps, batch
size, learning rate, maximum length and thread count.

Throughput is real (non-padding) training tokens per second of the optimisation loop
alone; the end-to-end time of our trainer (which also evaluates before and after and
saves the adapter) is reported separately. Runs alternate (ours, plain, ours, ...)
and the median of ``--repeats`` runs is compared, which damps a shared machine's noise.

Prints the ratio ours / plain and writes JSON (default ``bench/results/trainer.json``).
Run: ``.venv/bin/python bench/bench_trainer.py [--site lab-east] [--steps 60] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling

from tensorguard.training.base_model import build_default_base_model
from tensorguard.training.dataset import SiteDataset, load_site_dataset
from tensorguard.training.demo_data import DEMO_SITE_IDS, demo_sites_root
from tensorguard.training.determinism import library_versions
from tensorguard.training.lora import LoRATrainingConfig, train_site_adapter


def plain_peft_loop(
    base_model_dir: Path, texts: tuple[str, ...], config: LoRATrainingConfig
) -> dict[str, float]:
    """The baseline: a minimal peft training loop as the Hugging Face docs write it."""
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, local_files_only=True)
    model = get_peft_model(
        base,
        LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=config.r,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
        ),
    )
    encoded = [
        {"input_ids": ids}
        for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)[
            "input_ids"
        ]
    ]
    loader: DataLoader[dict[str, list[int]]] = DataLoader(
        encoded,  # type: ignore[arg-type]
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate
    )
    model.train()
    losses: list[float] = []
    tokens = 0
    started = time.perf_counter()
    while len(losses) < config.steps:
        for batch in loader:
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.item()))
            tokens += int(batch["attention_mask"].sum())
            if len(losses) == config.steps:
                break
    seconds = time.perf_counter() - started
    return {
        "tokens_per_second": tokens / seconds,
        "tokens": tokens,
        "seconds": seconds,
        "first_losses_mean": statistics.fmean(losses[:10]),
        "last_losses_mean": statistics.fmean(losses[-10:]),
    }


def ours(
    base_model_dir: Path, dataset: SiteDataset, config: LoRATrainingConfig, out_dir: Path
) -> dict[str, float]:
    """TensorGuard's trainer, end to end (eval before, train, eval after, save)."""
    started = time.perf_counter()
    result = train_site_adapter(base_model_dir, dataset, config, out_dir)
    return {
        "tokens_per_second": result.tokens_per_second,
        "tokens": result.tokens_processed,
        "seconds": result.seconds,
        "end_to_end_seconds": time.perf_counter() - started,
        "first_losses_mean": statistics.fmean(result.loss_curve[:10]),
        "last_losses_mean": statistics.fmean(result.loss_curve[-10:]),
        "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
    }


def main() -> None:
    """Run both trainers alternately, print the throughput ratio and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--site", default=DEMO_SITE_IDS[2], choices=DEMO_SITE_IDS)
    parser.add_argument("--base-model", type=Path, help="local HF model dir (default: build)")
    parser.add_argument("--steps", type=int, default=LoRATrainingConfig().steps)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("bench/results/trainer.json"))
    args = parser.parse_args()

    config = LoRATrainingConfig(steps=args.steps, torch_threads=args.threads)
    torch.set_num_threads(args.threads)
    dataset = load_site_dataset(demo_sites_root() / args.site)
    with tempfile.TemporaryDirectory(prefix="tg-bench-trainer-") as scratch:
        work = Path(scratch)
        base_model_dir = args.base_model
        if base_model_dir is None:
            base_model_dir = build_default_base_model(work / "base").path
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
        for repeat in range(args.repeats):
            runs["ours"].append(ours(base_model_dir, dataset, config, work / f"ours-{repeat}"))
            runs["plain"].append(plain_peft_loop(base_model_dir, dataset.train_texts, config))

    medians = {
        name: statistics.median(run["tokens_per_second"] for run in results)
        for name, results in runs.items()
    }
    ratio = medians["ours"] / medians["plain"]
    report = {
        "benchmark": "LoRA trainer throughput, TensorGuard vs plain peft loop",
        "site": args.site,
        "config": config.model_dump(mode="json"),
        "threads": args.threads,
        "repeats": args.repeats,
        "median_tokens_per_second": medians,
        "ratio_ours_over_plain": ratio,
        "runs": runs,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "versions": library_versions(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    shape = f"{args.steps} steps x batch {config.batch_size}, {args.threads} thread(s)"
    print(f"site {args.site}: {shape}")
    print(f"plain peft loop: {medians['plain']:10.0f} tokens/s (median of {args.repeats})")
    print(f"tensorguard:     {medians['ours']:10.0f} tokens/s (median of {args.repeats})")
    print(f"throughput ratio ours / plain: {ratio:.2f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
