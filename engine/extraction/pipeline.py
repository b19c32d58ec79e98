"""One page from image to checked data: transcription, the constrained pass, checks, one retry.

The first attempt uses the mode asked for (two passes by default: a free transcription, then the
schema-constrained answer that sees it). When that answer runs past the token limit, the retry
uses limits tightened until the longest possible answer fits the budget (so it always closes);
when it breaks the schema or fails a check, the retry switches between one and two passes. The
better of the two answers is kept, and what happened is recorded on the page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.backends.base import Backend
from engine.documents.pages import DocumentInfo, Page
from engine.errors import BadInput
from engine.extraction import prompts
from engine.extraction.bounds import WHITESPACE_KEY, fit_to_budget, generation_schema
from engine.extraction.checks import run_checks
from engine.extraction.merge import merge_pages
from engine.extraction.schemas import LoadedSchema, validation_errors
from engine.protocol import ENGINE_VERSION, ChatMessage, Sampling
from engine.protocol.extract import DocumentResult, ExtractOptions, Issue, PageResult, Provenance
from engine.protocol.wording import counted


class ExtractionCancelled(Exception):
    """The job was cancelled in the middle of a page."""


@dataclass(frozen=True)
class Setting:
    """What one attempt does differently."""

    two_pass: bool
    schema: dict[str, Any]
    label: str  # for the page's record of what happened


@dataclass
class Attempt:
    setting: Setting
    text: str = ""
    reason: str = "done"
    data: Any = None
    parsed: bool = False
    schema_errors: list[Issue] = field(default_factory=list)
    check_issues: list[Issue] = field(default_factory=list)
    transcription: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.parsed and not self.schema_errors

    @property
    def errors(self) -> int:
        return len(self.schema_errors) + sum(i.severity == "error" for i in self.check_issues)

    def rank(self) -> tuple[int, int, int]:
        """Smaller is better: valid first, then fewer errors, then fewer warnings."""
        warnings = sum(i.severity == "warning" for i in self.check_issues)
        return (0 if self.valid else 1 if self.parsed else 2, self.errors, warnings)


class PagePipeline:
    """Reads pages of one document with one backend and one schema."""

    def __init__(
        self,
        backend: Backend,
        schema: LoadedSchema,
        options: ExtractOptions,
        info: DocumentInfo,
        workdir: Path,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        on_stage: Callable[[str], None] = lambda stage: None,
    ) -> None:
        self.backend = backend
        self.schema = schema
        self.options = options
        self.info = info
        self.workdir = workdir
        self.cancelled = cancelled
        self.on_stage = on_stage
        self.generation_schema = generation_schema(schema.schema)

    # --- one page ----------------------------------------------------------------------------
    def run(self, page: Page, render_s: float = 0.0) -> PageResult:
        started = time.perf_counter()
        images = self._write_tiles(page)
        first = self._attempt(
            page, images, Setting(self.options.two_pass, self.generation_schema, "first")
        )
        attempts = [first]
        notes: list[Issue] = []
        try:
            retry = self._retry_setting(first)
        except BadInput as exc:  # even the smallest answer does not fit the token budget
            retry = None
            notes.append(Issue("", "length", exc.message))
        if retry is not None:
            attempts.append(self._attempt(page, images, retry, transcription=first.transcription))
        best = min(attempts, key=lambda attempt: attempt.rank())
        timings = {"render_s": render_s, **_sum_timings(attempts)}
        timings["total_s"] = render_s + time.perf_counter() - started
        result = self._result(page, best, attempts, timings)
        result.issues.extend(notes)
        return result

    def _write_tiles(self, page: Page) -> list[str]:
        paths = []
        for index, tile in enumerate(page.tiles):
            path = self.workdir / f"page{page.number}-tile{index}.png"
            tile.save(path, format="PNG", compress_level=1)
            paths.append(str(path))
        return paths

    def _retry_setting(self, first: Attempt) -> Setting | None:
        if not self.options.retry or self.cancelled():
            return None
        if first.reason == "length" or not first.parsed:
            # Tighten every limit until the longest possible answer fits the token budget, and
            # drop optional whitespace: this answer cannot run out of tokens.
            compact = {**first.setting.schema, WHITESPACE_KEY: 0}
            fitted, _ = fit_to_budget(compact, self.options.max_new_tokens, whitespace=0)
            return Setting(first.setting.two_pass, {**fitted, WHITESPACE_KEY: 0}, "tighter limits")
        if first.errors:
            two_pass = not first.setting.two_pass
            label = "two passes" if two_pass else "one pass"
            return replace(first.setting, two_pass=two_pass, label=label)
        return None

    def _attempt(
        self, page: Page, images: list[str], setting: Setting, transcription: str = ""
    ) -> Attempt:
        attempt = Attempt(setting)
        if setting.two_pass:
            if not transcription:
                self.on_stage("transcribing")
                began = time.perf_counter()
                generation = self._generate(
                    prompts.transcription_prompt(tiles=len(images), portrait=_portrait(page)),
                    images,
                    self.options.transcription_max_new_tokens,
                    None,
                )
                transcription = generation.text.strip()
                attempt.timings["transcribe_s"] = time.perf_counter() - began
                attempt.tokens["transcription"] = generation.completion_tokens
                attempt.reasons.append(f"transcription:{generation.reason}")
            attempt.transcription = transcription
        text_layer = page.text if self.options.use_text_layer and page.has_text_layer else None
        prompt = prompts.extraction_prompt(
            self.schema.schema,
            tiles=len(images),
            portrait=_portrait(page),
            transcription=attempt.transcription or None,
            text_layer=text_layer,
        )
        self.on_stage("extracting")
        began = time.perf_counter()
        schema = setting.schema
        if self.backend.name != "local":  # only the local grammar knows the whitespace key
            schema = {k: v for k, v in schema.items() if k != WHITESPACE_KEY}
        generation = self._generate(prompt, images, self.options.max_new_tokens, schema)
        attempt.timings["extract_s"] = time.perf_counter() - began
        attempt.tokens["prompt"] = generation.prompt_tokens
        attempt.tokens["answer"] = generation.completion_tokens
        attempt.text, attempt.reason = generation.text, generation.reason
        attempt.reasons.append(f"answer:{generation.reason}")
        began = time.perf_counter()
        self._judge(attempt, page)
        attempt.timings["checks_s"] = time.perf_counter() - began
        return attempt

    def _generate(
        self, prompt: str, images: list[str], max_new_tokens: int, schema: dict[str, Any] | None
    ) -> Any:
        sampling = Sampling(
            temperature=self.options.temperature,
            max_new_tokens=max_new_tokens,
            seed=self.options.seed,
        )
        message = ChatMessage(role="user", text=prompt, images=images)
        generation = self.backend.chat(
            [message],
            sampling,
            on_text=lambda text: None,
            cancelled=self.cancelled,
            json_schema=schema,
            # Pages are rendered within the extraction's own budget: none is scaled again.
            image_max_pixels=self.options.max_pixels,
        )
        if generation.reason == "cancelled" or self.cancelled():
            raise ExtractionCancelled()
        return generation

    def _judge(self, attempt: Attempt, page: Page) -> None:
        if attempt.reason == "length":
            return  # an answer cut off at the limit is never taken as a result
        try:
            attempt.data = json.loads(attempt.text)
        except json.JSONDecodeError:
            return
        attempt.parsed = True
        attempt.schema_errors = [
            Issue(pointer, "schema", message)
            for pointer, message in validation_errors(attempt.data, self.schema.schema)
        ]
        if self.options.checks and not attempt.schema_errors:
            text = page.text if self.options.use_text_layer else None
            attempt.check_issues = run_checks(attempt.data, text)

    # --- the page's record --------------------------------------------------------------------
    def _result(
        self, page: Page, best: Attempt, attempts: list[Attempt], timings: dict[str, float]
    ) -> PageResult:
        issues = list(best.schema_errors) + list(best.check_issues)
        first = attempts[0]
        if len(attempts) > 1:
            why = (
                "ran past the token limit"
                if first.reason == "length"
                else "was not valid JSON"
                if not first.parsed
                else f"had {counted(first.errors, 'problem')}"
            )
            kept = "the retry's" if best is not first else "the first"
            issues.append(
                Issue(
                    "",
                    "retry",
                    f"The first answer {why}; retried with {attempts[1].setting.label} and kept "
                    f"{kept} answer.",
                    "warning",
                )
            )
        error = ""
        if not best.parsed:
            status = "failed"
            if best.reason == "length":
                error = (
                    f"The answer ran past the {self.options.max_new_tokens}-token limit before "
                    "the JSON was complete."
                )
            else:
                error = "The answer was not valid JSON."
            issues.append(Issue("", "length" if best.reason == "length" else "schema", error))
        else:
            status = "ok" if best.valid else "invalid"
        info = self.backend.info()
        provenance = Provenance(
            file=str(self.info.path),
            sha256=self.info.sha256,
            page=page.number,
            backend=self.backend.name,
            model=info.model,
            quant=info.quant,
            device=info.device,
            adapter=info.adapter,
            prompt_version=prompts.PROMPT_VERSION,
            schema_name=self.schema.name,
            schema_version=self.schema.version,
            two_pass=best.setting.two_pass,
            attempts=len(attempts),
            engine_version=ENGINE_VERSION,
            dpi=page.dpi,
            image_size=[page.image.width, page.image.height],
            tiles=len(page.tiles),
            text_layer=page.has_text_layer,
            timings={k: round(v, 4) for k, v in timings.items()},
            tokens=_sum_tokens(attempts),
            finish_reasons=[r for a in attempts for r in a.reasons],
            pixel_budget=[self.options.max_long_side, self.options.max_pixels],
        )
        return PageResult(
            page=page.number,
            status=status,  # type: ignore[arg-type]
            data=best.data if best.parsed else None,
            issues=issues,
            provenance=provenance,
            transcription=best.transcription,
            error=error,
        )


def _portrait(page: Page) -> bool:
    width, height = page.source_size
    return height >= width


def _sum_timings(attempts: list[Attempt]) -> dict[str, float]:
    total: dict[str, float] = {}
    for attempt in attempts:
        for key, value in attempt.timings.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _sum_tokens(attempts: list[Attempt]) -> dict[str, int]:
    total: dict[str, int] = {}
    for attempt in attempts:
        for key, value in attempt.tokens.items():
            total[key] = total.get(key, 0) + value
    return total


def failed_page(number: int, message: str) -> PageResult:
    """A page that could not even be read (a damaged page of a multi-page file)."""
    return PageResult(
        page=number, status="failed", error=message, issues=[Issue("", "input", message)]
    )


def document_result(
    info: DocumentInfo, schema: LoadedSchema, pages: list[PageResult], seconds: float
) -> DocumentResult:
    """All pages of a file (in page order) and their merge, checked as a whole."""
    ordered = sorted(pages, key=lambda page: page.page)
    good = [(page.page, page.data) for page in ordered if page.status == "ok"]
    data, issues = merge_pages(good)
    if len(good) > 1:
        issues += [
            Issue(pointer, "schema", f"After merging the pages: {message}")
            for pointer, message in validation_errors(data, schema.schema)
        ]
        issues += [issue for issue in run_checks(data) if issue.check == "arithmetic"]
    if not good:
        status = "failed"
    elif len(good) == len(ordered):
        status = "ok"
    else:
        status = "partial"
    return DocumentResult(
        file=str(info.path),
        sha256=info.sha256,
        schema_name=schema.name,
        schema_version=schema.version,
        status=status,  # type: ignore[arg-type]
        data=data,
        pages=ordered,
        issues=issues,
        page_count=info.page_count,
        format=info.format,
        seconds=round(seconds, 4),
    )
