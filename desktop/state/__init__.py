"""GUI state objects: plain logic with Qt signals, no widgets."""

from desktop.state.chat_session import ChatSession
from desktop.state.engine_status import EngineStatusModel
from desktop.state.model_catalog import ModelCatalog, ModelChoice, ModelEntry

__all__ = ["ChatSession", "EngineStatusModel", "ModelCatalog", "ModelChoice", "ModelEntry"]
