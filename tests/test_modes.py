"""quantframe.modes: every module's training flag comes back, also after an error."""

import pytest
from torch import nn

from quantframe.modes import training_modes_restored


def test_mixed_flags_are_restored_after_switching_and_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Dropout()))
    model[1][1].eval()
    before = [m.training for m in model.modules()]
    with training_modes_restored(model) as inside:
        inside.eval()
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError), training_modes_restored(model):
        model.train()
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
