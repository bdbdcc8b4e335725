"""Shared test set-up: strict rank promotion and the hypothesis profile."""

import os

# Tests run on the CPU; keep XLA from grabbing an accelerator a developer might have.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import hypothesis  # noqa: E402
import jax  # noqa: E402

# Implicit broadcasting between arrays of different rank hides shape bugs: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "drojax",
    max_examples=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("drojax")
