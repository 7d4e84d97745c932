"""Public test helpers: a scripted OpenAI-compatible model server and history readers."""

from tether.testing._history import HistoryStats, StepRecord, history_stats
from tether.testing._model_server import (
    Fault,
    RecordedRequest,
    Script,
    ScriptedModelServer,
    ToolCall,
    Turn,
    Usage,
    turn_index,
)

__all__ = [
    "Fault",
    "HistoryStats",
    "RecordedRequest",
    "Script",
    "ScriptedModelServer",
    "StepRecord",
    "ToolCall",
    "Turn",
    "Usage",
    "history_stats",
    "turn_index",
]
