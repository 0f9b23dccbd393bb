"""NeMo 2 / Megatron: the Megatron backbone (tensor parallel), the FOCUS HyenaModel subclass and its trainer,
conversion and the CPU shims.

Importing any of it hides the messages the NeMo / Megatron stack prints on every run that a user of this
package can do nothing about (`NOT_ACTIONABLE`: optional pieces that are absent or unused here, Transformer
Engine, which this package does not use, telemetry); every other message is kept.
"""

import logging
import warnings

NOT_ACTIONABLE = (
    # NeMo's llm package, at import: optional subpackages this package does not use
    "The deploy module could not be imported",
    "The evaluate module could not be imported",
    # MegatronStrategy: the adapter's learning rate is set per step by the trainer, there is no LR scheduler
    "Could not copy Trainer's 'max_steps' to LR scheduler's 'max_steps'",
    # Lightning, through NeMo's warning capture: HyenaModel defines a validation step, which the trainer does not run
    "You defined a `validation_step` but have no `val_dataloader`",
    # ... and the MegatronStrategy NeMo's own converters and trainer use
    "`trainer.init_module` cannot fully support proper instantiation of your model with the `MegatronStrategy`",
    # Megatron and NeMo's Hyena without Transformer Engine (the local layer spec is used everywhere)
    "transformer_engine not installed",
    "fused_indices_to_multihot has reached end of life",
    # NeMo's telemetry, disabled
    "OneLogger: Setting error_handling_strategy",
    "No exporters were provided",
)
# Python warnings Megatron issues at import (module, message); the Warning category keeps NeMo's warning
# capture, which drops every warning of a category that has an "ignore" filter, from hiding other warnings.
NOT_ACTIONABLE_WARNINGS = (
    (r"megatron\.core\.", r"Transformer Engine and Apex are not installed"),
    (r"megatron\.core\.inference\.unified_memory", r"Failed to create unified memory mempool"),
)
LOGGERS = ("nemo_logger", "megatron.core.utils", "nv_one_logger.api.config",
           "nv_one_logger.training_telemetry.api.training_telemetry_provider",
           "nemo.collections.llm.gpt.model.megatron.hyena.hyena_mixer")


class NotActionableFilter(logging.Filter):
    """Drops the records whose message contains one of `NOT_ACTIONABLE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in NOT_ACTIONABLE)


# A logger's filters see the records it creates; adding them before NeMo is imported is enough (NeMo logs,
# and redirects Python warnings, through the standard logger "nemo_logger").
for _name in LOGGERS:
    if not any(isinstance(f, NotActionableFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(NotActionableFilter())
for _module, _message in NOT_ACTIONABLE_WARNINGS:
    warnings.filterwarnings("ignore", message=_message, category=Warning, module=_module)
