"""The run's reference: how its inputs are described in every report and message."""

from __future__ import annotations

import numpy as np

from resnet_deploy.preprocess import Preprocessing
from resnet_deploy.stages.reference import Reference, make_inputs


def test_random_inputs_say_what_they_are_and_how_many_a_check_used():
    pre = Preprocessing.from_dict({"input_size": [32, 32], "resize": 37, "mean": [0.5] * 3, "std": [0.5] * 3})
    data, labels, desc = make_inputs(pre, random_samples=16, seed=0)
    assert data.shape == (16, 3, 32, 32) and labels is None
    assert desc == "random:16 seed=0 (seeded standard-normal inputs: no images given)"
    ref = Reference(None, data, desc)
    assert ref.describe(8) == f"the first 8 of {desc}"  # was "random:16 seed=0 (first 8)"
    assert ref.describe(16) == desc and ref.describe(20) == f"{desc}, repeated to 20"
    assert np.array_equal(ref.inputs(20)[16:], data[:4])
