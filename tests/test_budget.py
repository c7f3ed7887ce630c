"""Meeting a pruning target on the measured network: rounding widths to blocks must not overshoot it."""

from __future__ import annotations

import torch

from compressor.models import create_model
from compressor.prune import bisect_share, build_groups, land_on_target, reduction_of, select_for_target
from compressor.prune.budget import lowest_first


def test_target_is_met_within_a_point_where_block_rounding_jumps_past_it() -> None:
    """ResNet-20, widths in blocks of 8: with these scores the bisection's family jumps from 44 % to 60 %
    removed (one block of the 16-wide stem group is 16 % of the MACs); landing adds other layers' blocks."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, input_shape=(3, 32, 32)).eval()
    example = torch.zeros(1, 3, 32, 32)
    groups = build_groups(model, example)
    reduction = reduction_of(model, groups, "macs", example)
    score = torch.rand(len(groups), generator=torch.Generator().manual_seed(0))
    _, over, under = bisect_share(lowest_first(groups, score, "macs", 8), reduction, 0.5)
    assert reduction(over) > 0.55 and reduction(under) < 0.45  # the jump this test is about
    landed = land_on_target(groups, under, over, score, reduction, 0.5, 8)
    assert 0.5 <= reduction(landed) <= 0.51
    assert bool((landed | ~under).all())  # it only adds to the set short of the target
    kept = torch.bincount(groups.layer_ids[~landed], minlength=len(groups.layers))
    widths = torch.bincount(groups.layer_ids, minlength=len(groups.layers))
    assert bool(((kept % 8 == 0) | (kept == widths)).all()) and bool((kept > 0).all())
    assert torch.equal(select_for_target(model, groups, score, 0.5, "macs", example, 8), landed)
