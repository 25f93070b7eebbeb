from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolSpec(_message.Message):
    __slots__ = ("name", "description", "parameters_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ...) -> None: ...

class ToolInfo(_message.Message):
    __slots__ = ("spec", "owner_id", "connected")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    spec: ToolSpec
    owner_id: str
    connected: bool
    def __init__(self, spec: _Optional[_Union[ToolSpec, _Mapping]] = ..., owner_id: _Optional[str] = ..., connected: _Optional[bool] = ...) -> None: ...

class ToolFailure(_message.Message):
    __slots__ = ("code", "type", "message", "traceback")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    code: str
    type: str
    message: str
    traceback: str
    def __init__(self, code: _Optional[str] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class RegisterToolRequest(_message.Message):
    __slots__ = ("session_id", "owner_id", "spec", "serving_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SERVING_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    owner_id: str
    spec: ToolSpec
    serving_key: str
    def __init__(self, session_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., spec: _Optional[_Union[ToolSpec, _Mapping]] = ..., serving_key: _Optional[str] = ...) -> None: ...

class RegisterToolResponse(_message.Message):
    __slots__ = ("tool",)
    TOOL_FIELD_NUMBER: _ClassVar[int]
    tool: ToolInfo
    def __init__(self, tool: _Optional[_Union[ToolInfo, _Mapping]] = ...) -> None: ...

class UnregisterToolsRequest(_message.Message):
    __slots__ = ("session_id", "owner_id", "names", "serving_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SERVING_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    owner_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    serving_key: str
    def __init__(self, session_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., serving_key: _Optional[str] = ...) -> None: ...

class UnregisterToolsResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolInfo]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolInfo, _Mapping]]] = ...) -> None: ...

class CallToolRequest(_message.Message):
    __slots__ = ("session_id", "name", "arguments_json", "timeout")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    arguments_json: str
    timeout: float
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class CallToolResponse(_message.Message):
    __slots__ = ("result_json", "failure", "owner_id")
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    failure: ToolFailure
    owner_id: str
    def __init__(self, result_json: _Optional[str] = ..., failure: _Optional[_Union[ToolFailure, _Mapping]] = ..., owner_id: _Optional[str] = ...) -> None: ...

class ServeToolsRequest(_message.Message):
    __slots__ = ("session_id", "owner_id", "serving_key")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVING_KEY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    owner_id: str
    serving_key: str
    def __init__(self, session_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., serving_key: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("call_id", "name", "arguments_json")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments_json: str
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ServeToolsStarted(_message.Message):
    __slots__ = ("owner_id", "serving_key")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVING_KEY_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    serving_key: str
    def __init__(self, owner_id: _Optional[str] = ..., serving_key: _Optional[str] = ...) -> None: ...

class ServeToolsHeartbeat(_message.Message):
    __slots__ = ("server_time",)
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    server_time: float
    def __init__(self, server_time: _Optional[float] = ...) -> None: ...

class ServeToolsResponse(_message.Message):
    __slots__ = ("started", "call", "heartbeat")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    started: ServeToolsStarted
    call: ToolCall
    heartbeat: ServeToolsHeartbeat
    def __init__(self, started: _Optional[_Union[ServeToolsStarted, _Mapping]] = ..., call: _Optional[_Union[ToolCall, _Mapping]] = ..., heartbeat: _Optional[_Union[ServeToolsHeartbeat, _Mapping]] = ...) -> None: ...

class ReturnToolResultRequest(_message.Message):
    __slots__ = ("session_id", "owner_id", "call_id", "result_json", "failure")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    owner_id: str
    call_id: str
    result_json: str
    failure: ToolFailure
    def __init__(self, session_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., call_id: _Optional[str] = ..., result_json: _Optional[str] = ..., failure: _Optional[_Union[ToolFailure, _Mapping]] = ...) -> None: ...

class ReturnToolResultResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...
