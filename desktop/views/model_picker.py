"""The toolbar's model, quantisation and device choices."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from desktop.state.model_catalog import DEVICES, QUANTS, ModelChoice, ModelEntry

_ADD_FOLDER = "__add_folder__"
_QUANT_LABELS = {
    "auto": "Auto",
    "nf4": "4-bit (NF4)",
    "int8": "8-bit",
    "none": "Full precision",  # bf16 on a GPU, float32 on the CPU
}
_DEVICE_LABELS = {"auto": "Auto", "cuda": "GPU (CUDA)", "cpu": "CPU"}


def quant_words(quant: str) -> str:
    """A quantisation as a person reads it in a sentence ("4-bit (NF4)", "full precision")."""
    label = _QUANT_LABELS.get(quant, quant)
    return label.lower() if quant == "none" else label


class ModelPicker(QWidget):
    choice_changed = Signal(object)  # ModelChoice
    add_folder_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("modelPicker")
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 0, 8, 0)
        row.setSpacing(8)
        row.addWidget(_caption("Model"))
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("modelCombo")
        self.model_combo.setMinimumWidth(280)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_combo.setToolTip("A model from your Hugging Face cache or a folder you added")
        row.addWidget(self.model_combo)
        row.addSpacing(8)
        row.addWidget(_caption("Quantisation"))
        self.quant_combo = QComboBox()
        for quant in QUANTS:
            self.quant_combo.addItem(_QUANT_LABELS[quant], quant)
        self.quant_combo.setToolTip("Auto: 4-bit on a GPU, which fits most models in little memory")
        row.addWidget(self.quant_combo)
        row.addSpacing(8)
        row.addWidget(_caption("Device"))
        self.device_combo = QComboBox()
        for device in DEVICES:
            self.device_combo.addItem(_DEVICE_LABELS[device], device)
        row.addWidget(self.device_combo)
        self._entries: list[ModelEntry] = []
        self._model: str | None = None
        self._filling = False
        self._rebuild_models()
        self.model_combo.activated.connect(self._on_model_combo_activated)
        self.quant_combo.currentIndexChanged.connect(self._on_option_changed)
        self.device_combo.currentIndexChanged.connect(self._on_option_changed)

    def choice(self) -> ModelChoice:
        return ModelChoice(
            self._model, self.quant_combo.currentData(), self.device_combo.currentData()
        )

    def set_entries(self, entries: list[ModelEntry]) -> None:
        self._entries = list(entries)
        self._rebuild_models()

    def set_choice(self, choice: ModelChoice) -> None:
        """Show ``choice`` without emitting ``choice_changed``."""
        self._filling = True
        try:
            self._model = choice.model
            self._rebuild_models()
            self.quant_combo.setCurrentIndex(max(0, self.quant_combo.findData(choice.quant)))
            self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(choice.device)))
        finally:
            self._filling = False

    def set_cuda_available(self, available: bool) -> None:
        index = self.device_combo.findData("cuda")
        item = self.device_combo.model().item(index)  # type: ignore[attr-defined]
        item.setEnabled(available)
        item.setToolTip("" if available else "No CUDA GPU was found on this computer")

    def _rebuild_models(self) -> None:
        filling, self._filling = self._filling, True
        try:
            combo = self.model_combo
            combo.clear()
            if not self._entries and not self._model:
                combo.addItem("No models found — add a model folder", None)
            elif not self._model:
                combo.addItem("Choose a model…", None)
            models = {entry.model for entry in self._entries}
            if self._model and self._model not in models:  # remembered, not (yet) scanned
                combo.addItem(self._model, self._model)
            for entry in self._entries:
                combo.addItem(entry.label, entry.model)
                combo.setItemData(combo.count() - 1, entry.detail, Qt.ItemDataRole.ToolTipRole)
            combo.insertSeparator(combo.count())
            combo.addItem("Add model folder…", _ADD_FOLDER)
            combo.setCurrentIndex(max(0, combo.findData(self._model)) if self._model else 0)
        finally:
            self._filling = filling

    @Slot(int)
    def _on_model_combo_activated(self, index: int) -> None:
        data = self.model_combo.itemData(index)
        if data == _ADD_FOLDER:
            self._rebuild_models()  # put the current model back on display
            self.add_folder_requested.emit()
            return
        if data != self._model:
            self._model = data
            self._rebuild_models()
            self.choice_changed.emit(self.choice())

    @Slot(int)
    def _on_option_changed(self, _index: int) -> None:
        if not self._filling:
            self.choice_changed.emit(self.choice())


def _caption(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("toolbarCaption")
    return label
