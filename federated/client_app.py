"""The ClientApp: train the federated adapter on this device's data and send back only the adapter.

A device's data is its store's accepted/edited examples (node config
`store = /path/tidings.db`) or, in simulation, a non-IID partition of the
training splits (`partition-id`, `num-partitions`, set by the simulation
engine). What to train (steps, learning rate, limits) comes from the server
with each round; how the update is protected is also the server's choice and
is applied by `privacy_mod` around the trainer:

- SecAgg+ rounds (the message carries SecAgg+ stage configs) go through
  Flower's `secaggplus_mod`: the server only ever sees the masked sum.
- Otherwise the update (new - global) is compressed (fp16/int8) on the way out.
- In both, when the server sends a clipping norm (central DP), Flower's
  `fixedclipping_mod` clips the update first, so the norm is bounded before
  masking or compression.

Before anything leaves, the client checks its own update (names, shapes,
finite values) and refuses to send a malformed one. The legacy client API is
used because SecAgg+ exists only there in Flower 1.41.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from tidings.federated import compression
from tidings.federated.adapter import AdapterSpec
from tidings.federated.partitions import device_examples
from tidings.federated.task import LocalTraining, embedded_model, layout_for, store_examples, train_local

log = logging.getLogger("tidings")


class LocalTrainingInterrupted(RuntimeError):
    """The device stopped training (busy); its checkpoint continues next time."""


def spec_from(config: dict) -> AdapterSpec:
    return AdapterSpec(rank=int(config["rank"]), alpha=float(config["alpha"]),
                       target_modules=tuple(str(config["modules"]).split(",")), frozen_a=bool(config["frozen-a"]))


def training_from(config: dict) -> LocalTraining:
    return LocalTraining(steps=int(config["local-steps"]), learning_rate=float(config["learning-rate"]),
                         batch_tokens=int(config["batch-tokens"]), max_seq_tokens=int(config["max-seq-tokens"]),
                         max_examples=int(config["max-examples"]), seed=int(config["global-round"]),
                         threads=int(config["threads"]))


class DeviceClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.node_config = context.node_config
        self.node_id = context.node_id
        self.run_id = context.run_id

    def examples(self, max_examples: int):
        if "store" in self.node_config:
            return store_examples(Path(str(self.node_config["store"])), max_examples)
        return device_examples(int(self.node_config["partition-id"]), int(self.node_config["num-partitions"]),
                               seed=0)

    def work_dir(self) -> Path:
        if "work-dir" in self.node_config:
            return Path(str(self.node_config["work-dir"]))
        # Per run: a virtual device of another run (other settings) must not resume this one's local checkpoint.
        name = self.node_config.get("partition-id", self.node_id)
        return Path(tempfile.gettempdir()) / f"tidings-fl-run{self.run_id}-device-{name}"

    def fit(self, parameters: list[np.ndarray], config: dict):
        model = embedded_model()
        spec = spec_from(config)
        layout = layout_for(model, spec)
        if layout.fingerprint != config["layout"]:
            raise ValueError(f"this device's adapter layout {layout.fingerprint} is not the server's {config['layout']}")
        training = training_from(config)
        result = train_local(model, spec, layout.from_list(parameters), self.examples(training.max_examples),
                             training, self.work_dir())
        if result.arrays is None:
            raise LocalTrainingInterrupted(f"stopped after {result.steps} of {training.steps} steps")
        values = layout.to_list(result.arrays)
        problem = layout.problems(values)
        if problem:
            raise ValueError(f"refusing to send a malformed update: {problem}")
        # With central DP every device weighs the same: the noise is calibrated to one device's clipped update.
        weight = 1 if KEY_CLIPPING_NORM in config else result.num_examples
        return values, weight, {"train_loss": result.loss, "steps": result.steps, "examples": result.num_examples,
                                "train_seconds": result.seconds, "layout": layout.fingerprint}


def client_fn(context: Context):
    return DeviceClient(context).to_client()


def compression_mod(msg: Message, context: Context, call_next) -> Message:
    """Replace the reply's parameters by the encoded update (kind from the server's `compression`)."""
    fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    kind = str(fit_ins.config.get("compression", "none"))
    received = parameters_to_ndarrays(fit_ins.parameters)
    reply = call_next(msg, context)
    if reply.has_error() or kind == "none":
        return reply
    fit_res = compat.recorddict_to_fitres(reply.content, keep_input=True)
    encoded = compression.encode(parameters_to_ndarrays(fit_res.parameters), received, kind)
    fit_res.parameters = ndarrays_to_parameters(encoded.arrays)
    fit_res.metrics["compression"] = kind
    reply.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
    return reply


def _clipping(msg: Message, context: Context, call_next) -> Message:
    if KEY_CLIPPING_NORM in compat.recorddict_to_fitins(msg.content, keep_input=True).config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def privacy_mod(msg: Message, context: Context, call_next) -> Message:
    """Route a training message through SecAgg+ or compression, with DP clipping inside either."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)

    def clipped(inner_msg: Message, inner_context: Context) -> Message:
        return _clipping(inner_msg, inner_context, call_next)

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, clipped)
    return compression_mod(msg, context, clipped)


app = ClientApp(client_fn=client_fn, mods=[privacy_mod])
