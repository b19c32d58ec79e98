"""Per-model consent to load pickle weights or run a model's own code: asked once, remembered.

The engine refuses such models (error ``model_unsafe``) unless ``LoadModel`` carries
``allow_pickle`` / ``trust_remote_code``; this module decides those flags from what the user
allowed for that model, and asks when they have not been asked yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from engine import protocol as p

PICKLE = "pickle"
REMOTE_CODE = "remote_code"
KINDS = (PICKLE, REMOTE_CODE)
_KEY = "models/consent"

EXPLANATIONS = {
    PICKLE: (
        "Its weights are pickle files (<code>.bin</code>/<code>.pt</code>). Loading a pickle "
        "file can run any code its author put in it."
    ),
    REMOTE_CODE: (
        "It needs its own Python code to load (<code>trust_remote_code</code>). That code runs "
        "on this computer with your permissions."
    ),
}


class ConsentStore:
    """What the user allowed, per model, kept in QSettings."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self._settings = settings or QSettings()

    def granted(self, model: str) -> set[str]:
        return set(self._all().get(model, []))

    def missing(self, model: str, needs: Iterable[str]) -> list[str]:
        granted = self.granted(model)
        return [kind for kind in KINDS if kind in set(needs) and kind not in granted]

    def grant(self, model: str, kinds: Iterable[str]) -> None:
        data = self._all()
        data[model] = sorted(set(data.get(model, [])) | (set(kinds) & set(KINDS)))
        self._save(data)

    def revoke(self, model: str) -> None:
        data = self._all()
        if data.pop(model, None) is not None:
            self._save(data)

    def load_command(
        self, job_id: str, model: str, quant: str = "auto", device: str = "auto"
    ) -> p.LoadModel:
        """A load that carries exactly the consent remembered for ``model``."""
        granted = self.granted(model)
        return p.LoadModel(
            job_id=job_id,
            model=model,
            quant=quant,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            allow_pickle=PICKLE in granted,
            trust_remote_code=REMOTE_CODE in granted,
        )

    def _all(self) -> dict[str, list[str]]:
        raw = self._settings.value(_KEY, "{}")
        try:
            data = json.loads(str(raw))
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): [str(v) for v in vs] for k, vs in data.items() if isinstance(vs, list)}

    def _save(self, data: dict[str, list[str]]) -> None:
        self._settings.setValue(_KEY, json.dumps(data, sort_keys=True))
        self._settings.sync()


def needs_from_error(finished: p.Finished) -> list[str]:
    """Which consent a ``model_unsafe`` refusal asks for (the engine names it in its sentence)."""
    if finished.error_code != p.ErrorCode.MODEL_UNSAFE:
        return []
    text = finished.message.lower()
    needs = []
    if "pickle" in text:
        needs.append(PICKLE)
    if "trust_remote_code" in text or "own python code" in text:
        needs.append(REMOTE_CODE)
    return needs


class ConsentDialog(QDialog):
    """Says what could happen, and allows only after the user confirms they trust the source."""

    def __init__(self, model: str, needs: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.needs = needs
        self.setWindowTitle("Allow this model?")
        layout = QVBoxLayout(self)
        intro = QLabel(f"<b>{_escape(model)}</b> cannot load with VisionDesk's safe defaults.")
        intro.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(intro)
        for kind in needs:
            label = QLabel(EXPLANATIONS[kind])
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setWordWrap(True)
            layout.addWidget(label)
        remembered = QLabel("VisionDesk remembers your answer for this model only.")
        remembered.setWordWrap(True)
        layout.addWidget(remembered)
        self.trust = QCheckBox("I trust where this model comes from")
        layout.addWidget(self.trust)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.allow = self.buttons.addButton("Allow", QDialogButtonBox.ButtonRole.AcceptRole)
        self.allow.setEnabled(False)
        self.trust.toggled.connect(self.allow.setEnabled)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)


def ask_consent(
    store: ConsentStore,
    model: str,
    needs: Iterable[str],
    parent: QWidget | None = None,
    dialog_factory: type[ConsentDialog] = ConsentDialog,
) -> bool:
    """True when every need is allowed for ``model``; asks (once) only for what is missing."""
    missing = store.missing(model, needs)
    if not missing:
        return True
    dialog = dialog_factory(model, missing, parent)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return False
    store.grant(model, missing)
    return True


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
