"""Copy weights between Flax (NHWC, HWIO kernels) and PyTorch (NCHW, OIHW kernels).

Layouts:

* convolution: torch ``(O, I/groups, kh, kw)`` <-> Flax ``(kh, kw, I/groups, O)``; a
  depthwise conv (torch ``groups=C``, weight ``(C, 1, kh, kw)``) is a Flax conv with
  ``feature_group_count=C`` and kernel ``(kh, kw, 1, C)``: the same permutation.
* dense: torch ``(out, in)`` <-> Flax ``(in, out)``. A dense layer that reads a flattened
  feature map sees ``(C, H, W)`` order in torch and ``(H, W, C)`` order in Flax, so its
  input axis is permuted too (``flatten_chw=(C, H, W)``).
* batch norm: ``weight, bias, running_mean, running_var`` <-> params ``scale, bias`` and
  batch_stats ``mean, var``.

Layers are matched *in order* (torch module registration order, Flax parameter insertion
order, which is call order for ``nn.compact`` modules), and every shape is checked, so a
mismatch fails loudly instead of copying garbage.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn


def conv_to_flax(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def conv_to_torch(k: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)))


def dense_to_flax(w: np.ndarray, flatten_chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """torch ``(out, in)`` -> Flax ``(in, out)``; permute ``in`` from CHW to HWC order if given."""
    if flatten_chw is not None:
        _check_flatten(w.shape[1], flatten_chw)
        c, h, ww = flatten_chw
        w = w.reshape(w.shape[0], c, h, ww).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    return np.ascontiguousarray(w.T)


def _check_flatten(n_in: int, chw: tuple[int, int, int]) -> None:
    if n_in != chw[0] * chw[1] * chw[2]:
        raise ValueError(
            f"dense layer has {n_in} inputs but flatten_chw={tuple(chw)} has {chw[0] * chw[1] * chw[2]}"
        )


def dense_to_torch(k: np.ndarray, flatten_chw: tuple[int, int, int] | None = None) -> np.ndarray:
    w = k.T
    if flatten_chw is not None:
        _check_flatten(w.shape[1], flatten_chw)
        c, h, ww = flatten_chw
        w = w.reshape(w.shape[0], h, ww, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
    return np.ascontiguousarray(w)


def _flax_layers(params: Mapping, prefix: tuple = ()) -> list[tuple[tuple, Mapping]]:
    """``(path, leaf dict)`` of every conv/dense (has ``kernel``) or norm (has ``scale``), in order."""
    out = []
    if "kernel" in params or ("scale" in params and "bias" in params):
        return [(prefix, params)]
    for k, v in params.items():
        if isinstance(v, Mapping):
            out += _flax_layers(v, prefix + (k,))
    return out


def _torch_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]


def _get(tree: Mapping, path: tuple) -> Mapping:
    for p in path:
        tree = tree[p]
    return tree


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def torch_to_flax(
    model: nn.Module, variables: Mapping, flatten_chw: Mapping[str, tuple[int, int, int]] | None = None
) -> dict:
    """A copy of ``variables`` holding ``model``'s weights (layers matched in order).

    ``flatten_chw`` maps the torch name of each dense layer that reads a flattened
    feature map to that map's ``(C, H, W)``.
    """
    flatten_chw = dict(flatten_chw or {})
    variables = jax.tree_util.tree_map(lambda a: a, dict(variables))  # shallow copies below
    params = _unfreeze(variables["params"])
    stats = _unfreeze(variables.get("batch_stats", {}))
    fl = _flax_layers(params)
    tl = _torch_layers(model)
    if len(fl) != len(tl):
        raise ValueError(
            f"layer count differs: flax {len(fl)} vs torch {len(tl)}:\n"
            f"{[p for p, _ in fl]}\n{[n for n, _ in tl]}"
        )
    for (path, leaf), (name, mod) in zip(fl, tl, strict=True):
        new = {}
        if isinstance(mod, nn.Conv2d):
            new["kernel"] = conv_to_flax(_np(mod.weight))
            if mod.bias is not None:
                new["bias"] = _np(mod.bias)
        elif isinstance(mod, nn.Linear):
            new["kernel"] = dense_to_flax(_np(mod.weight), flatten_chw.pop(name, None))
            new["bias"] = _np(mod.bias)
        else:
            new["scale"], new["bias"] = _np(mod.weight), _np(mod.bias)
            bs = _get(stats, path)
            for key, val in (("mean", mod.running_mean), ("var", mod.running_var)):
                if bs[key].shape != tuple(val.shape):
                    raise ValueError(f"{'/'.join(path)}/{key} {bs[key].shape} vs {name} {tuple(val.shape)}")
                bs[key] = jnp.asarray(_np(val))
        for key, val in new.items():
            if key not in leaf or tuple(leaf[key].shape) != val.shape:
                raise ValueError(
                    f"{'/'.join(path)}/{key} {getattr(leaf.get(key), 'shape', None)} "
                    f"vs torch {name} {val.shape}"
                )
            leaf[key] = jnp.asarray(val)
    if flatten_chw:
        raise ValueError(f"flatten_chw names no torch Linear layer: {sorted(flatten_chw)}")
    out = dict(variables)
    out["params"] = params
    if stats:
        out["batch_stats"] = stats
    return out


def flax_to_torch(
    variables: Mapping, model: nn.Module, flatten_chw: Mapping[str, tuple[int, int, int]] | None = None
) -> nn.Module:
    """Load ``variables`` into ``model`` in place (layers matched in order); returns ``model``."""
    flatten_chw = dict(flatten_chw or {})
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    fl = _flax_layers(params)
    tl = _torch_layers(model)
    if len(fl) != len(tl):
        raise ValueError(f"layer count differs: flax {len(fl)} vs torch {len(tl)}")
    with torch.no_grad():
        for (path, leaf), (name, mod) in zip(fl, tl, strict=True):
            pairs = []
            if isinstance(mod, nn.Conv2d):
                pairs.append((mod.weight, conv_to_torch(np.asarray(leaf["kernel"]))))
                if mod.bias is not None:
                    pairs.append((mod.bias, np.asarray(leaf["bias"])))
            elif isinstance(mod, nn.Linear):
                pairs.append(
                    (mod.weight, dense_to_torch(np.asarray(leaf["kernel"]), flatten_chw.pop(name, None)))
                )
                pairs.append((mod.bias, np.asarray(leaf["bias"])))
            else:
                bs = _get(stats, path)
                pairs += [
                    (mod.weight, np.asarray(leaf["scale"])),
                    (mod.bias, np.asarray(leaf["bias"])),
                    (mod.running_mean, np.asarray(bs["mean"])),
                    (mod.running_var, np.asarray(bs["var"])),
                ]
            for t, a in pairs:
                if tuple(t.shape) != a.shape:
                    raise ValueError(f"{'/'.join(path)} {a.shape} vs torch {name} {tuple(t.shape)}")
                t.copy_(torch.from_numpy(np.array(a, dtype=np.float32)))
    if flatten_chw:
        raise ValueError(f"flatten_chw names no torch Linear layer: {sorted(flatten_chw)}")
    return model


def _unfreeze(tree):
    if isinstance(tree, Mapping):
        return {k: _unfreeze(v) for k, v in tree.items()}
    return tree
