import pytest
import torch
from torch import nn

from simclr_search.training.ema import WeightAverage


def test_weight_average_follows_the_running_mean_and_copies_counters() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(2.0)
    model.train()(torch.randn(4, 2))  # moves the BatchNorm statistics and its step counter
    average.update(model)
    got = average.state_dict()
    # hand-written: avg = 0.5 * old + 0.5 * new for floats, the new value for integers
    torch.testing.assert_close(got["0.weight"], start["0.weight"] + 1.0)
    expected_mean = 0.5 * start["1.running_mean"] + 0.5 * model[1].running_mean
    torch.testing.assert_close(got["1.running_mean"], expected_mean)
    assert got["1.num_batches_tracked"] == 1
    fresh = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    fresh.load_state_dict(got)  # fits a model of the same shape
    got["0.weight"].zero_()  # a copy: the average itself is untouched
    assert average.state["0.weight"].abs().sum() > 0


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_weight_average_rejects_a_decay_outside_0_1(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), decay)
