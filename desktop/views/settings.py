"""Settings for cloud and remote backends: providers, keys, models, the policy, your own server,
and one line that says plainly what will be sent where.

The view talks to no engine itself: "Test connection" and "Refresh models" are signals (the
window sends ``TestConnection`` / ``ListProviderModels`` and hands the ``finished`` event back to
``show_finished``). Keys go straight into the OS keyring and are never shown again.
"""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.settings_store import (
    ANSWER_TOKENS,
    ANSWER_TOKENS_RANGE,
    CLOUD_PROVIDER,
    COMPANIES,
    DECODING,
    DECODING_CHOICES,
    IDLE_UNLOAD,
    IDLE_UNLOAD_CHOICES,
    PICTURE_DETAIL,
    PICTURE_DETAIL_CHOICES,
    POLICY,
    PROVIDER_MODELS,
    REMOTE_MODEL,
    REMOTE_URL,
    REPETITION_PENALTY,
    REPETITION_PENALTY_RANGE,
    SYSTEM_PROMPT,
    TEMPERATURE,
    TEMPERATURE_RANGE,
    CloudSettings,
    KeyStore,
    KeyStoreError,
    Setting,
    describe_sending,
)
from engine import protocol as p
from engine.protocol import cloud as c
from engine.protocol import models as pm

SpinBox = TypeVar("SpinBox", QSpinBox, QDoubleSpinBox)


class ProviderBox(QGroupBox):
    """One provider: its key (masked), its model, and a connection test."""

    def __init__(self, provider: str, title: str, key_label: str) -> None:
        super().__init__(title)
        self.provider = provider
        self.setObjectName(f"{provider}Box")
        form = QFormLayout(self)
        self.url_edit: QLineEdit | None = None
        if provider == c.REMOTE:
            self.url_edit = QLineEdit()
            self.url_edit.setObjectName("remoteUrlEdit")
            self.url_edit.setPlaceholderText("http://gpu-box:8000/v1")
            self.url_edit.setToolTip(REMOTE_URL.description)
            form.addRow("Server URL", self.url_edit)
        self.key_edit = QLineEdit()
        self.key_edit.setObjectName(f"{provider}KeyEdit")
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.save_key_button = QPushButton("Save")
        self.forget_key_button = QPushButton("Remove")
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_edit, 1)
        key_row.addWidget(self.save_key_button)
        key_row.addWidget(self.forget_key_button)
        form.addRow(key_label, key_row)
        self.key_status = QLabel()
        self.key_status.setObjectName(f"{provider}KeyStatus")
        self.key_status.setWordWrap(True)
        form.addRow("", self.key_status)
        self.model_combo = QComboBox()
        self.model_combo.setObjectName(f"{provider}ModelCombo")
        self.model_combo.setEditable(True)  # any model id the provider knows
        self.refresh_button = QPushButton("Refresh list")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.refresh_button)
        form.addRow("Model", model_row)
        self.test_button = QPushButton("Test connection")
        self.test_button.setObjectName(f"{provider}TestButton")
        self.test_result = QLabel()
        self.test_result.setObjectName(f"{provider}TestResult")
        self.test_result.setWordWrap(True)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        form.addRow("", test_row)

    @property
    def base_url(self) -> str:
        return self.url_edit.text().strip() if self.url_edit is not None else ""

    def model(self) -> str:
        return self.model_combo.currentText().strip()

    def set_model(self, model: str) -> None:
        if model and self.model_combo.findText(model) < 0:
            self.model_combo.addItem(model)
        self.model_combo.setCurrentText(model)


class SettingsView(QWidget):
    """``SettingsView(CloudSettings(qsettings), KeyStore())``: self-contained, persisted at once."""

    connection_test_requested = Signal(str, str)  # provider, base URL ("" for the default)
    models_requested = Signal(str, str)  # provider, base URL
    settings_changed = Signal()

    def __init__(
        self, settings: CloudSettings, keys: KeyStore, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("settingsView")
        self.settings = settings
        self.keys = keys
        self._loading = False
        layout = QVBoxLayout(self)
        self.sending_label = QLabel()
        self.sending_label.setObjectName("sendingSummary")
        self.sending_label.setWordWrap(True)
        summary = QGroupBox("What is sent where")
        QVBoxLayout(summary).addWidget(self.sending_label)
        layout.addWidget(summary)
        layout.addWidget(self._routing_box())
        layout.addWidget(self._answers_box())
        self.boxes: dict[str, ProviderBox] = {}
        for provider in c.CLOUD_PROVIDERS:
            label, company = c.PROVIDER_LABELS[provider], COMPANIES[provider]
            title = label if label == company else f"{label} ({company})"  # not "OpenAI (OpenAI)"
            self._add_box(ProviderBox(provider, title, "API key"), layout)
        self._add_box(ProviderBox(c.REMOTE, "Your own server (OpenAI-compatible)", "Token"), layout)
        layout.addWidget(self._local_box())
        layout.addStretch(1)
        self._load()

    # --- building --------------------------------------------------------------------------------
    def _routing_box(self) -> QGroupBox:
        box = QGroupBox("Routing")
        form = QFormLayout(box)
        self.policy_combo = QComboBox()
        self.policy_combo.setObjectName("policyCombo")
        self.policy_combo.setToolTip(POLICY.description)
        for policy in c.POLICIES:
            self.policy_combo.addItem(c.POLICY_LABELS[policy], policy)
        form.addRow("Policy", self.policy_combo)
        self.provider_combo = QComboBox()
        self.provider_combo.setObjectName("providerCombo")
        self.provider_combo.setToolTip(CLOUD_PROVIDER.description)
        for provider in c.CLOUD_PROVIDERS:
            self.provider_combo.addItem(c.PROVIDER_LABELS[provider], provider)
        form.addRow("Cloud provider", self.provider_combo)
        self.policy_combo.currentIndexChanged.connect(self._on_policy_combo_changed)
        self.provider_combo.currentIndexChanged.connect(self._on_provider_combo_changed)
        return box

    def _answers_box(self) -> QGroupBox:
        box = QGroupBox("Chat answers")
        form = QFormLayout(box)
        self.length_spin = self._number(
            form,
            "Longest answer",
            QSpinBox(),
            ANSWER_TOKENS,
            ANSWER_TOKENS_RANGE,
            256,
            suffix=" tokens",
        )
        self.temperature_spin = self._number(
            form,
            "Temperature",
            QDoubleSpinBox(),
            TEMPERATURE,
            TEMPERATURE_RANGE,
            0.1,
            special="0 (the likeliest words; the same every time)",
        )
        self.repetition_spin = self._number(
            form, "Repetition penalty", QDoubleSpinBox(), REPETITION_PENALTY,
            REPETITION_PENALTY_RANGE, 0.05, special="off",
        )  # fmt: skip
        self.system_edit = QPlainTextEdit()
        self.system_edit.setObjectName("systemPrompt")
        self.system_edit.setPlaceholderText("Optional, e.g. “Answer briefly, in French.”")
        self.system_edit.setToolTip(SYSTEM_PROMPT.description)
        self.system_edit.setFixedHeight(64)
        self.system_edit.setTabChangesFocus(True)  # Tab moves on; the instructions need no tabs
        form.addRow("Instructions", self.system_edit)
        note = QLabel("For new answers, local and cloud alike.")
        note.setObjectName("hint")
        form.addRow("", note)
        self.system_edit.textChanged.connect(
            lambda: self._save(SYSTEM_PROMPT, self.system_edit.toPlainText())
        )
        return box

    def _number(
        self,
        form: QFormLayout,
        label: str,
        spin: SpinBox,
        setting: Setting[str],
        bounds: tuple[float, float],
        step: float,
        suffix: str = "",
        special: str = "",
    ) -> SpinBox:
        """A numeric answer setting: its range, step and words, saved as it changes."""
        if isinstance(spin, QDoubleSpinBox):
            spin.setDecimals(2)
            spin.setRange(*bounds)
            spin.setSingleStep(step)
        else:
            spin.setRange(int(bounds[0]), int(bounds[1]))
            spin.setSingleStep(int(step))
        spin.setSuffix(suffix)
        spin.setSpecialValueText(special)
        spin.setToolTip(setting.description)
        spin.valueChanged.connect(lambda value: self._save(setting, f"{value:g}"))
        form.addRow(label, spin)
        return spin

    def _local_box(self) -> QGroupBox:
        box = QGroupBox("Local models")
        form = QFormLayout(box)
        self.decoding_combo = self._choice(
            form, "Decoding", "decodingCombo", DECODING, DECODING_CHOICES,
            hint="Applies when the engine next starts.",
        )  # fmt: skip
        self.idle_combo = self._choice(
            form, "Free the memory", "idleUnloadCombo", IDLE_UNLOAD, IDLE_UNLOAD_CHOICES
        )
        self.detail_combo = self._choice(
            form, "Picture detail", "pictureDetailCombo", PICTURE_DETAIL, PICTURE_DETAIL_CHOICES,
            hint="For models that read pictures at their own size (Qwen2-VL family).",
        )  # fmt: skip
        # The Hub token for gated models, in the keyring entry the engine's downloads read.
        row = QHBoxLayout()
        self.hub_token_edit = QLineEdit()
        self.hub_token_edit.setObjectName("hubTokenEdit")
        self.hub_token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.hub_token_edit.returnPressed.connect(self._save_hub_token)
        row.addWidget(self.hub_token_edit, 1)
        save = QPushButton("Save")
        save.clicked.connect(self._save_hub_token)
        row.addWidget(save)
        self.hub_token_remove = QPushButton("Remove")
        self.hub_token_remove.clicked.connect(self._forget_hub_token)
        row.addWidget(self.hub_token_remove)
        form.addRow("Hugging Face token", row)
        self.hub_token_status = QLabel()
        self.hub_token_status.setObjectName("hint")
        self.hub_token_status.setWordWrap(True)
        form.addRow("", self.hub_token_status)
        self._show_hub_token_status()
        return box

    @Slot()
    def _save_hub_token(self) -> None:
        typed = self.hub_token_edit.text()
        self.hub_token_edit.clear()  # it leaves the window as soon as it is stored
        if not typed.strip():
            return
        try:
            self.keys.save(pm.HUB_TOKEN_USER, typed)
        except KeyStoreError as error:
            self.hub_token_status.setText(f"{error} Set HF_TOKEN in the environment instead.")
            return
        self._show_hub_token_status()

    @Slot()
    def _forget_hub_token(self) -> None:
        self.keys.forget(pm.HUB_TOKEN_USER)
        self._show_hub_token_status()

    def _show_hub_token_status(self) -> None:
        saved = self.keys.has_key(pm.HUB_TOKEN_USER)
        self.hub_token_status.setText(
            "A token is saved in the system keyring; downloads of gated models use it."
            if saved
            else "No token saved. Gated models (Llama 3.2 Vision, PaliGemma) need one: accept "
            "their licence on the Hub, then paste a read token here."
        )
        self.hub_token_edit.setPlaceholderText(
            "saved — type to replace" if saved else "paste the token here"
        )
        self.hub_token_remove.setEnabled(saved)

    def _choice(
        self,
        form: QFormLayout,
        label: str,
        name: str,
        setting: Setting[str],
        choices: dict[str, str],
        hint: str = "",
    ) -> QComboBox:
        """A setting chosen from a list, saved as it changes; a hint line under it if given."""
        combo = QComboBox()
        combo.setObjectName(name)
        combo.setToolTip(setting.description)
        for choice, text in choices.items():
            combo.addItem(text, choice)
        form.addRow(label, combo)
        if hint:
            note = QLabel(hint)
            note.setObjectName("hint")
            form.addRow("", note)
        combo.currentIndexChanged.connect(
            lambda index: self._save(setting, str(combo.itemData(index)), announce=True)
        )
        return combo

    def _add_box(self, box: ProviderBox, layout: QVBoxLayout) -> None:
        self.boxes[box.provider] = box
        layout.addWidget(box)
        provider = box.provider
        box.save_key_button.clicked.connect(lambda: self._save_key(provider))
        box.key_edit.returnPressed.connect(lambda: self._save_key(provider))
        box.forget_key_button.clicked.connect(lambda: self._forget_key(provider))
        box.test_button.clicked.connect(lambda: self._test(provider))
        box.refresh_button.clicked.connect(
            lambda: self.models_requested.emit(provider, box.base_url)
        )
        box.model_combo.currentTextChanged.connect(lambda _: self._on_model_changed(provider))
        if box.url_edit is not None:
            box.url_edit.editingFinished.connect(self._on_url_edited)

    def _load(self) -> None:
        self._loading = True
        sampling = self.settings.sampling()
        self.length_spin.setValue(sampling.max_new_tokens)
        self.temperature_spin.setValue(sampling.temperature)
        self.repetition_spin.setValue(sampling.repetition_penalty)
        self.system_edit.setPlainText(self.settings.get(SYSTEM_PROMPT))
        self._loading = False
        self.decoding_combo.setCurrentIndex(self.decoding_combo.findData(self.settings.decoding))
        self.idle_combo.setCurrentIndex(
            self.idle_combo.findData(str(self.settings.idle_unload_minutes))
        )
        self.detail_combo.setCurrentIndex(
            self.detail_combo.findData(str(self.settings.image_max_pixels))
        )
        self.policy_combo.setCurrentIndex(self.policy_combo.findData(self.settings.policy))
        self.provider_combo.setCurrentIndex(self.provider_combo.findData(self.settings.provider))
        for provider, box in self.boxes.items():
            if provider == c.REMOTE:
                assert box.url_edit is not None
                box.url_edit.setText(self.settings.get(REMOTE_URL))
                box.set_model(self.settings.get(REMOTE_MODEL))
            else:
                box.set_model(self.settings.model_for(provider))
            self._show_key_status(provider)
        self._update_summary()

    # --- keys ------------------------------------------------------------------------------------
    def _save_key(self, provider: str) -> bool:
        box = self.boxes[provider]
        typed = box.key_edit.text()
        if not typed.strip():
            return False
        try:
            self.keys.save(provider, typed)
        except KeyStoreError as error:
            box.key_status.setText(str(error))
            return False
        finally:
            box.key_edit.clear()  # the key leaves the window as soon as it is stored
        self._show_key_status(provider)
        return True

    def _forget_key(self, provider: str) -> None:
        self.keys.forget(provider)
        self._show_key_status(provider)

    def _show_key_status(self, provider: str) -> None:
        box = self.boxes[provider]
        saved = self.keys.has_key(provider)
        what = "token" if provider == c.REMOTE else "key"
        box.key_status.setText(
            f"A {what} is saved in the system keyring." if saved else f"No {what} saved."
        )
        box.key_edit.setPlaceholderText(
            "saved — type to replace" if saved else f"paste the {what} here"
        )
        box.forget_key_button.setEnabled(saved)

    # --- connection test and models ---------------------------------------------------------------
    def _test(self, provider: str) -> None:
        self._save_key(provider)  # a key typed but not yet saved is what the user means to test
        box = self.boxes[provider]
        box.test_result.setText("Testing…")
        self.connection_test_requested.emit(provider, box.base_url)

    @Slot(str, bool, str)
    def show_connection_result(self, provider: str, ok: bool, message: str) -> None:
        self.boxes[provider].test_result.setText(("✓ " if ok else "✗ ") + message)

    def show_finished(self, provider: str, finished: p.Finished) -> None:
        """Show the end of a ``TestConnection`` or ``ListProviderModels`` job."""
        result = finished.result or {}
        if finished.reason != "done":
            self.show_connection_result(provider, False, finished.message or "Cancelled.")
        elif isinstance(result.get("models"), list):
            self.set_provider_models(provider, [str(m["id"]) for m in result["models"]])
        else:
            count = result.get("models", 0)
            self.show_connection_result(provider, True, f"Connected: {count} models available.")

    @Slot(str, list)
    def set_provider_models(self, provider: str, models: list[str]) -> None:
        box = self.boxes[provider]
        current = box.model()
        box.model_combo.blockSignals(True)
        box.model_combo.clear()
        box.model_combo.addItems(models)
        box.model_combo.blockSignals(False)
        box.set_model(current or (models[0] if models else ""))

    # --- persistence -----------------------------------------------------------------------------
    def _save(self, setting: Setting[str], value: str, announce: bool = False) -> None:
        """Store a changed setting; ``announce`` tells the window (settings it applies at once)."""
        if self._loading:  # filling the widgets from the settings writes nothing back
            return
        self.settings.set(setting, value)
        if announce:
            self._changed()

    @Slot(int)
    def _on_policy_combo_changed(self, index: int) -> None:
        self.settings.set(POLICY, str(self.policy_combo.itemData(index)))
        self._changed()

    @Slot(int)
    def _on_provider_combo_changed(self, index: int) -> None:
        self.settings.set(CLOUD_PROVIDER, str(self.provider_combo.itemData(index)))
        self._changed()

    def _on_model_changed(self, provider: str) -> None:
        model = self.boxes[provider].model()
        self.settings.set(PROVIDER_MODELS.get(provider, REMOTE_MODEL), model)
        self._changed()

    @Slot()
    def _on_url_edited(self) -> None:
        self.settings.set(REMOTE_URL, self.boxes[c.REMOTE].base_url)
        self._changed()

    def _changed(self) -> None:
        self._update_summary()
        self.settings_changed.emit()

    def _update_summary(self) -> None:
        provider = self.settings.provider
        self.sending_label.setText(
            describe_sending(
                self.settings.policy,
                provider,
                self.settings.model_for(provider),
                self.settings.get(REMOTE_URL),
            )
        )
        remote = self.settings.policy == c.REMOTE_SERVER
        self.provider_combo.setEnabled(self.settings.policy != c.LOCAL_ONLY and not remote)
