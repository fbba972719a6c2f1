"""The policy runtime: compile, hold, reload, and run requests through the filter chain."""

from wardgate.runtime.chain import RequestPipeline
from wardgate.runtime.compiled import (
    FILTER_CHAIN,
    CompiledPolicy,
    PolicyCompileError,
    compile_policy,
)
from wardgate.runtime.holder import PolicyHolder
from wardgate.runtime.loading import default_policy_spec, load_compiled
from wardgate.runtime.reload import PolicyReloader

__all__ = [
    "FILTER_CHAIN",
    "CompiledPolicy",
    "PolicyCompileError",
    "PolicyHolder",
    "PolicyReloader",
    "RequestPipeline",
    "compile_policy",
    "default_policy_spec",
    "load_compiled",
]
