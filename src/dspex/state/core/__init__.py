"""In-process state: the provider contract and the one home of store semantics.

Runs wherever a session lives: in the user's process for a local session, and inside the store
server behind the servicer. Nothing here imports ``grpc`` or the generated ``dspex._proto``
(an import-linter contract keeps it so): the contract (``contract``), the semantics over an
engine (``semantics``) with its pure pieces (``writes``, ``locks``, ``dependencies``,
``limits``, ``access``), watch fan-out (``fanout``, ``watch``), expiry (``expiry``), caller
identity (``identity``), the session view (``context``) and a session's tools (``tools``).
"""
