"""Row-block layout round trips and CKKS parameter validation."""

from __future__ import annotations

import pytest
import torch

from tensorguard.moai import CkksParameters, MoaiExportError
from tensorguard.moai.block_layout import block_grid, pack_weight, unpack_weight
from tensorguard.moai.export import module_file_name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_pack_unpack_round_trips_bit_for_bit(dtype: torch.dtype) -> None:
    weight = torch.randn(7, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    grid = block_grid(out_features=7, in_features=5, block_size=4)
    blocks = pack_weight(weight, grid)
    assert tuple(blocks.shape) == (2, 2, 4, 4)
    assert blocks.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(unpack_weight(blocks, grid).to(dtype), weight)


def test_blocks_hold_slices_of_the_transpose_with_zero_padding() -> None:
    weight = torch.arange(35, dtype=torch.float32).reshape(7, 5)
    grid = block_grid(out_features=7, in_features=5, block_size=4)
    blocks = pack_weight(weight, grid)
    transpose = weight.T
    assert torch.equal(blocks[0, 0], transpose[0:4, 0:4])
    assert torch.equal(blocks[0, 1, :, :3], transpose[0:4, 4:7])
    assert torch.equal(blocks[1, 0, :1], transpose[4:5, 0:4])
    assert torch.count_nonzero(blocks[1, 1, 1:]) == 0
    assert torch.count_nonzero(blocks[0, 1, :, 3:]) == 0


def test_small_matrices_use_a_single_block() -> None:
    grid = block_grid(out_features=64, in_features=128, block_size=2048)
    assert grid.packed_shape == (1, 1, 128, 64)


def test_default_ckks_parameters_and_their_limits() -> None:
    parameters = CkksParameters()
    assert (parameters.slot_count, parameters.max_block_size) == (4096, 2048)
    assert CkksParameters.from_dict(parameters.as_dict()) == parameters
    with pytest.raises(MoaiExportError, match="above the 218 bits"):
        CkksParameters(coeff_mod_bit_sizes=(60, 40, 40, 40, 40, 60))
    with pytest.raises(MoaiExportError, match="is not one of"):
        CkksParameters(poly_modulus_degree=6000)
    with pytest.raises(MoaiExportError, match="must equal global_scale_bits"):
        CkksParameters(coeff_mod_bit_sizes=(60, 30, 60))
    with pytest.raises(MoaiExportError, match="at least three primes"):
        CkksParameters(coeff_mod_bit_sizes=(60, 60))


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x..y"])
def test_unsafe_module_names_are_refused(name: str) -> None:
    with pytest.raises(MoaiExportError, match="not a safe file name"):
        module_file_name(name)
