"""The training loop of a VLM adapter: explicit state, so a resume continues exactly.

A plain PyTorch loop rather than ``transformers.Trainer``: every piece of state that decides the
next update (trained tensors, optimiser, scheduler, random state, position in the data order) is
saved in each checkpoint, and the data order is a pure function of (seed, epoch), so a run killed
at any point and resumed from a checkpoint ends with the same adapter as one that never stopped.

The loss over an accumulation window is the sum over its trained tokens divided by their count
(``num_items_in_batch``), so accumulation does not change the loss scale.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.finetune import checkpoint as ckpt
from engine.finetune.adapters import attach_trainable, load_base, save_adapter, trainable_tensors
from engine.finetune.collate import IGNORE, Supervisor
from engine.finetune.config import TrainConfig
from engine.finetune.data import Example
from engine.finetune.validate import read_examples

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]
EMA = 0.2  # weight of the newest step in the ETA's moving average


class Stopped(Exception):
    """The person asked to stop (or the engine went away): save and leave."""


class Trainer:
    def __init__(self, config: TrainConfig, report: Report, stop: threading.Event) -> None:
        self.config = config
        self.report = report
        self.stop = stop
        self.train_rows: list[Example] = read_examples(config.data_file("train"))
        held = read_examples(config.data_file("eval"))
        self.eval_on = "held_out" if held else "training_rows"
        # Without held-out rows the curve shows loss on the fixed probe rows (training rows).
        self.eval_rows = held or read_examples(config.data_file("probe"))
        self.fingerprint = config.fingerprint()
        self.state: dict[str, Any] = {
            "step": 0,
            "best_loss": None,
            "best_step": None,
            "bad_evals": 0,
            "history": [],
            "elapsed_s": 0.0,
        }
        self._ema_step_s: float | None = None

    # --- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        from engine.finetune.collate import stop_token_ids

        config = self.config
        _seed_everything(config.seed)
        self.report(
            {"event": "loading", "message": f"Loading {config.model_name} ({config.quant})"}
        )
        base, self.processor = load_base(
            config.model_path,
            kind=config.kind,
            quant=config.quant,
            device=config.device,
            dtype=config.dtype,
            skip_modules=config.skip_modules,
            trust_remote_code=config.trust_remote_code,
        )
        self.model = attach_trainable(
            base,
            regex=config.target_regex,
            modules_to_save=config.modules_to_save,
            rank=config.rank,
            alpha=config.alpha,
            dropout=config.dropout,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        self.model.train()
        stops = stop_token_ids(config.model_path, base.config, self.processor.tokenizer)
        self.supervisor = Supervisor(self.processor, base.config, stops, config.image_max_pixels)
        self.params = trainable_tensors(self.model)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        if config.optimizer == "adamw" and config.device == "cuda":
            self.report(
                {"event": "notice", "message": "AdamW in 32-bit (8-bit AdamW was turned off)."}
            )
        if config.optimizer == "adamw" and config.device != "cuda":
            self.report(
                {
                    "event": "notice",
                    "message": "No CUDA GPU: the optimiser is standard AdamW (8-bit AdamW needs CUDA).",
                }
            )

    def _optimizer(self) -> Any:
        import torch

        vision = tuple(prefix + "." for prefix in self.config.vision_prefixes)
        groups: dict[str, list[Any]] = {"language": [], "vision": []}
        for name, param in self.params.items():
            # peft prefixes names with base_model.model.; match the module path inside it
            inner = name.removeprefix("base_model.model.")
            groups["vision" if inner.startswith(vision) else "language"].append(param)
        param_groups = [
            {"params": groups["language"], "lr": self.config.learning_rate},
            {"params": groups["vision"], "lr": self.config.vision_learning_rate},
        ]
        param_groups = [group for group in param_groups if group["params"]]
        decay = self.config.weight_decay
        if self.config.optimizer == "adamw_8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(
                param_groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=decay
            )
        return torch.optim.AdamW(
            param_groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=decay, foreach=False
        )

    def _lr_lambda(self, step: int) -> float:
        total = max(1, self.config.total_steps)
        warmup = (
            max(1, round(total * self.config.warmup_ratio)) if self.config.warmup_ratio > 0 else 0
        )
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    # --- resume ----------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the newest intact checkpoint; damaged ones are reported and skipped."""
        import torch

        found, rejected = ckpt.find(self.config.run, self.fingerprint)
        for bad in rejected:
            self.report(
                {
                    "event": "notice",
                    "message": f"Checkpoint {bad.path.name} is not usable: "
                    f"{bad.reason}. Using an earlier one.",
                }
            )
        if found is None:
            if ckpt.listed(self.config.run) or rejected:
                self.report({"event": "notice", "message": "No intact checkpoint: starting over."})
            return
        tensors, states, state = ckpt.load(found.path)
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(tensors[name].to(param.device, param.dtype))
        self.optimizer.load_state_dict(states["optimizer"])
        self.scheduler.load_state_dict(states["scheduler"])
        _set_rng(states["rng"])
        self.state = state
        self.report(
            {
                "event": "resumed",
                "step": found.step,
                "checkpoint": found.path.name,
                "history": state["history"],
            }
        )

    # --- the run ---------------------------------------------------------------------------------
    def run(self, trial: bool) -> dict[str, Any]:
        """Train to the end, an early stop, or a stop request; returns the finished event."""
        if trial and self.state["step"] == 0:
            self.trial_step()
        if self.state["step"] == 0 and not self.state["history"] and self.eval_rows:
            self._evaluate(0)  # the "before" point of the curve
        reason = "done"
        started = time.perf_counter()
        base_elapsed = self.state["elapsed_s"]
        waits = 0.0
        try:
            for step, window, wait in self._windows():
                waits += wait
                loss, tokens, samples = self._step(window)
                self.state["step"] = step + 1
                self.state["elapsed_s"] = base_elapsed + time.perf_counter() - started
                self._report_step(loss, tokens, samples, waits, started)
                if self._due(self.config.eval_every) and self.eval_rows:
                    if self._evaluate(self.state["step"]):
                        reason = "early_stopped"
                if self._due(self.config.checkpoint_every) or reason == "early_stopped":
                    self._checkpoint(_get_rng())
                if reason == "early_stopped":
                    break
        except Stopped:
            reason = "stopped"
            self._checkpoint(self._window_rng)
        if reason == "done" and self.state["step"] and self._last_saved != self.state["step"]:
            self._checkpoint(_get_rng())
        adapter = self._save_final(reason)
        return {
            "event": "finished",
            "reason": reason,
            "step": self.state["step"],
            "adapter_dir": str(adapter),
            "best_loss": self.state["best_loss"],
            "best_step": self.state["best_step"],
        }

    _last_saved: int | None = None
    _window_rng: dict[str, Any] | None = None

    def _windows(self) -> Iterator[tuple[int, list[dict[str, Any]], float]]:
        """(step, its collated micro-batches, seconds waited for them), prefetched by a thread."""
        steps = range(self.state["step"], self.config.total_steps)
        buffer: queue.Queue[Any] = queue.Queue(maxsize=2)
        halt = threading.Event()

        def produce() -> None:
            try:
                for step in steps:
                    window = [self.collate(rows, keys) for rows, keys in self._window_rows(step)]
                    while not halt.is_set():
                        try:
                            buffer.put((step, window), timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if halt.is_set():
                        return
            except BaseException as exc:  # handed to the training thread, which re-raises it
                buffer.put(exc)
            buffer.put(None)

        thread = threading.Thread(target=produce, name="batches", daemon=True)
        thread.start()
        try:
            while True:
                self._window_rng = _get_rng()
                self._check_stop()
                waited = time.perf_counter()
                item = buffer.get()
                waited = time.perf_counter() - waited
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item[0], item[1], waited
        finally:
            halt.set()

    def _window_rows(self, step: int) -> list[tuple[list[Example], list[int]]]:
        """The micro-batches of optimiser step ``step``: a pure function of seed and step."""
        config = self.config
        epoch, index = divmod(step, config.steps_per_epoch)
        order = epoch_order(len(self.train_rows), config.seed, epoch)
        per_window = config.batch_size * config.grad_accum
        chosen = order[index * per_window : (index + 1) * per_window]
        return [
            (
                [self.train_rows[i] for i in chosen[s : s + config.batch_size]],
                chosen[s : s + config.batch_size],
            )
            for s in range(0, len(chosen), config.batch_size)
        ]

    def _step(self, window: list[dict[str, Any]]) -> tuple[float, int, int]:
        import torch

        items = self.window_items(window)
        total = 0.0
        for batch in window:
            self._check_stop()
            loss = self.forward_loss(batch, items)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.after_update()
        tokens = sum(int(batch["attention_mask"].sum()) for batch in window)
        samples = sum(int(batch["input_ids"].shape[0]) for batch in window)
        return total, tokens, samples

    # --- what a kind of training defines (contrastive training overrides these) ----------------
    def collate(self, rows: list[Example], keys: list[int] | None = None) -> dict[str, Any]:
        return self.supervisor.collate(rows, keys)

    def window_items(self, window: list[dict[str, Any]]) -> int:
        """Trained tokens in the window: the loss is their sum divided by this count."""
        return max(1, sum(int((batch["labels"][:, 1:] != IGNORE).sum()) for batch in window))

    def forward_loss(self, batch: dict[str, Any], items: int) -> Any:
        return self.model(**self._to_device(batch), num_items_in_batch=items).loss

    def row_length(self, index: int) -> int:
        return self.supervisor.encode(self.train_rows[index], index).length

    def after_update(self) -> None:
        """Called after every optimiser step."""

    def adapter_notes(self, reason: str) -> dict[str, Any]:
        config = self.config
        return {
            "base_model": config.model_path,
            "base_name": config.model_name,
            "model_type": config.model_type,
            "recipe": config.recipe,
            "quant": config.quant,
            "skip_modules": config.skip_modules,
            "image_max_pixels": config.image_max_pixels,
            "adapter_kind": "projector" if not config.target_regex else "peft",
            "step": self.state["step"],
            "best_step": self.state["best_step"],
            "best_eval_loss": self.state["best_loss"],
            "complete": reason != "stopped",
        }

    def _check_stop(self) -> None:
        if self.stop.is_set():
            self.optimizer.zero_grad(set_to_none=True)  # a half-accumulated window is dropped
            raise Stopped

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return move_batch(batch, self.model.device, _base_dtype(self.config))

    def _due(self, every: int) -> bool:
        step = self.state["step"]
        return every > 0 and (step % every == 0 or step == self.config.total_steps)

    # --- evaluation, checkpoints, reports ------------------------------------------------------
    def eval_loss(self) -> float:
        return token_loss(
            self.model, self.supervisor, self.eval_rows, self.config.batch_size, self._to_device
        )

    def _evaluate(self, step: int) -> bool:
        """Record one evaluation; True when early stopping says to stop."""
        loss = self.eval_loss()
        state = self.state
        improved = state["best_loss"] is None or loss < state["best_loss"] - 1e-4
        if improved:
            state["best_loss"], state["best_step"], state["bad_evals"] = loss, step, 0
        elif step > 0:
            state["bad_evals"] += 1
        point = {
            "event": "eval",
            "step": step,
            "eval_loss": loss,
            "best_loss": state["best_loss"],
            "best_step": state["best_step"],
            "on": self.eval_on,
        }
        state["history"].append(point)
        self.report(point)
        patience = self.config.early_stopping_patience
        return bool(patience and self.eval_on == "held_out" and state["bad_evals"] >= patience)

    def _checkpoint(self, rng: dict[str, Any] | None) -> None:
        step = self.state["step"]
        states = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng or _get_rng(),
        }
        path = ckpt.save(self.config.run, step, self.params, states, self.state, self.fingerprint)
        best = self.state["best_step"] if self.eval_on == "held_out" else None
        ckpt.prune(self.config.run, keep_last=2, best_step=best)
        self._last_saved = step
        self.report({"event": "checkpoint", "step": step, "path": str(path)})

    def _report_step(
        self, loss: float, tokens: int, samples: int, waits: float, started: float
    ) -> None:
        import torch

        now = time.perf_counter()
        seconds = now - getattr(self, "_last_step_at", started)
        self._last_step_at = now
        self._ema_step_s = (
            seconds if self._ema_step_s is None else (EMA * seconds + (1 - EMA) * self._ema_step_s)
        )
        step = self.state["step"]
        if self.config.device == "cuda":
            peak = int(torch.cuda.max_memory_allocated())
        else:
            import resource

            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        point = {
            "event": "step",
            "step": step,
            "total_steps": self.config.total_steps,
            "epoch": step / self.config.steps_per_epoch,
            "loss": loss,
            "learning_rate": float(self.scheduler.get_last_lr()[0]),
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "samples_per_s": samples / max(seconds, 1e-9),
            "peak_memory_bytes": peak,
            "data_wait_fraction": waits / max(now - started, 1e-9),
            "eta_s": self._ema_step_s * (self.config.total_steps - step),
            "elapsed_s": self.state["elapsed_s"],
        }
        self.state["history"].append(
            {k: point[k] for k in ("event", "step", "loss", "learning_rate")}
        )
        self.report(point)

    def _save_final(self, reason: str) -> Any:
        """The adapter people use: the best held-out checkpoint's weights, else the last ones."""
        import torch

        best = self.state["best_step"]
        if (
            reason != "stopped"
            and self.eval_on == "held_out"
            and best
            and best != self.state["step"]
        ):
            path = ckpt.checkpoint_dir(self.config.run, best)
            if not ckpt.verify(path, self.fingerprint):
                tensors = ckpt.load(path)[0]
                with torch.no_grad():
                    for name, param in self.params.items():
                        param.copy_(tensors[name].to(param.device, param.dtype))
        return save_adapter(self.model, self.config.run / "adapter", self.adapter_notes(reason))

    # --- trial -----------------------------------------------------------------------------------
    def trial_step(self) -> dict[str, Any]:
        """Forward and backward on the worst-case batch (longest rows), leaving no trace."""
        import torch

        keys = sorted(range(len(self.train_rows)), key=lambda i: -self.row_length(i))
        keys = keys[: self.config.batch_size]
        if self.config.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        # fork_rng: a trial must not move the random state the run (and its resume) depends on.
        with torch.random.fork_rng(devices=[0] if self.config.device == "cuda" else []):
            batch = self.collate([self.train_rows[i] for i in keys], keys)
            self.forward_loss(batch, self.window_items([batch])).backward()
        self.optimizer.zero_grad(set_to_none=True)
        if self.config.device == "cuda":
            peak = int(torch.cuda.max_memory_allocated())
        else:
            import resource

            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        result = {
            "event": "trial",
            "ok": True,
            "peak_bytes": peak,
            "seconds": time.perf_counter() - started,
            "batch_size": len(keys),
            "tokens": int(batch["attention_mask"].sum()),
        }
        self.report(result)
        return result


def token_loss(
    model: Any,
    supervisor: Supervisor,
    rows: list[Example],
    batch_size: int,
    move: Callable[[dict[str, Any]], dict[str, Any]],
) -> float:
    """Token-weighted mean loss over ``rows`` (the model is left in the mode it was in)."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = supervisor.collate(rows[start : start + batch_size])
                count += int((batch["labels"][:, 1:] != IGNORE).sum())
                # num_items_in_batch=1 makes the model return the summed loss of the batch
                total += float(model(**move(batch), num_items_in_batch=1).loss)
    finally:
        model.train(was_training)
    return total / max(1, count)


def epoch_order(rows: int, seed: int, epoch: int) -> list[int]:
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(rows, generator=generator)]


def move_batch(batch: dict[str, Any], device: Any, dtype: Any) -> dict[str, Any]:
    """Tensors onto the model's device; pixel values and other floats in the compute dtype."""
    import torch

    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        moved[key] = value
    return moved


def _base_dtype(config: TrainConfig) -> Any:
    from engine.finetune.adapters import torch_dtype

    return torch_dtype(config.dtype)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _get_rng() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    numpy_state: Any = np.random.get_state()
    state["numpy"] = [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state[0], numpy_state[1].numpy(), *numpy_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
