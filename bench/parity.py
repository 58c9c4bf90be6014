"""Parity of cbnet's kernels and nets with PyTorch, on the same inputs.

Run where torch is installed (never part of make test):
    python3 bench/parity.py [--cbnet build/bin/cbnet] [--seed 0]
Writes random inputs for every case to a safetensors file, runs
bench/parity.lua (cbnet computes forward outputs and gradients, convolutions
once per conv path the CPU has), computes the same in PyTorch (float64, so the
reference is exact to float32's precision), and prints the relative error of
each output: max |cbnet - torch| / max |torch|. Exit status 1 if any exceeds
1e-4, or where PyTorch float32's own error on the same case is larger, 10x
that (the case is ill-conditioned: batch norm over a few values, a ReLU or a
pooling window's winner within rounding; for the whole nets over several
batches, see net_errors). Cases: conv2d (stride 1/2, padding 0/1, odd sizes, with and without
bias), batch norm (training, with running statistics), max/avg/adaptive
pooling, linear, cross-entropy (plain and label-smoothed), and the seed CNN
and ResNet-32 whole (cbnet's initial weights loaded into the PyTorch model):
logits, loss and every parameter's gradient.
With --random N: N cases of shapes drawn at random instead (convolutions with
any stride, padding, dilation, groups, batch and size, the input in either
image layout; the fused ops; pooling; batch norm), the check of kernels on
shapes no one chose. A convolution's bias before batch norm has a gradient
that is zero up to rounding: it is judged on the scale of beta's.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import ResNet32, convnet  # noqa: E402

DTYPES = {"F32": np.float32, "I64": np.int64}


def save_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        code = "F32" if array.dtype == np.float32 else "I64"
        blob = array.tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=DTYPES[info["dtype"]])
        out[name] = array.reshape(info["shape"])
    return out


def make_cases(rng):
    """name -> (spec, {input name: array})"""
    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    cases = {}
    conv_shapes = [  # n, c, h, w, o, k, stride, padding, bias
        (3, 16, 32, 32, 16, 3, 1, 1, 0), (2, 5, 9, 13, 7, 3, 1, 1, 1), (2, 4, 11, 10, 6, 3, 2, 1, 0),
        (2, 3, 8, 9, 5, 3, 1, 0, 1), (3, 6, 7, 7, 4, 3, 2, 0, 1), (2, 32, 16, 16, 32, 3, 1, 1, 0),
        (2, 64, 8, 8, 64, 3, 1, 1, 0), (2, 16, 32, 32, 32, 3, 2, 1, 0), (2, 3, 32, 32, 32, 3, 1, 1, 1),
        (2, 8, 6, 6, 8, 1, 1, 0, 1), (2, 128, 9, 19, 96, 3, 1, 1, 1),  # the last: Winograd, partial tiles
    ]
    # added later, drawn from a generator of their own so that the cases after
    # them (the nets' draws) stay the same
    later_rng = np.random.default_rng(11)
    later_shapes = [
        (2, 4, 9, 35, 6, 3, 2, 0, 1),  # 17 strided output columns: im2col's vector loops
        (3, 16, 13, 21, 18, 3, 1, 1, 0),  # 16 channels in: the weight gradient's lanes kernel, 18 out
    ]
    for i, (n, c, h, w, o, k, stride, padding, bias) in enumerate(conv_shapes + later_shapes):
        draw = randn if i < len(conv_shapes) else (lambda *shape: later_rng.standard_normal(shape).astype(np.float32))
        oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
        arrays = {"x": draw(n, c, h, w), "w": draw(o, c, k, k) * 0.2, "gy": draw(n, o, oh, ow)}
        if bias:
            arrays["b"] = draw(o)
        cases[f"conv{i}"] = (f"conv2d stride={stride} padding={padding} bias={bias}", arrays)
    for i, shape in enumerate([(4, 16, 8, 8), (3, 7, 5, 6), (8, 10)]):
        cases[f"bn{i}"] = ("batch_norm", {"x": randn(*shape) * 2 + 1, "w": randn(shape[1]),
                                          "b": randn(shape[1]), "gy": randn(*shape)})
    cases["maxpool"] = ("max_pool2d kernel=2 stride=2 padding=0",
                        {"x": randn(2, 3, 8, 9), "gy": randn(2, 3, 4, 4)})
    cases["maxpool3"] = ("max_pool2d kernel=3 stride=2 padding=1",
                         {"x": randn(2, 3, 9, 8), "gy": randn(2, 3, 5, 4)})
    cases["avgpool"] = ("avg_pool2d kernel=3 stride=2 padding=1",
                        {"x": randn(2, 3, 9, 8), "gy": randn(2, 3, 5, 4)})
    cases["adaptive"] = ("adaptive_avg_pool2d size=3",
                         {"x": randn(2, 4, 8, 7), "gy": randn(2, 4, 3, 3)})
    cases["linear"] = ("linear", {"x": randn(5, 12), "w": randn(7, 12), "b": randn(7),
                                  "gy": randn(5, 7)})
    target = rng.integers(0, 10, size=(16,)).astype(np.int64)
    cases["ce"] = ("cross_entropy smoothing=0", {"x": randn(16, 10) * 3, "target": target})
    cases["ce_smooth"] = ("cross_entropy smoothing=0.1", {"x": randn(16, 10) * 3, "target": target})
    # each net on NET_DRAWS batches: whether a ReLU lands within rounding of
    # zero (see net_errors) depends on the draw
    for draw in range(NET_DRAWS):
        images, labels = randn(8, 3, 32, 32), rng.integers(0, 10, size=(8,)).astype(np.int64)
        cases[f"convnet_d{draw}"] = ("net name=convnet seed=1", {"x": images, "target": labels})
        cases[f"resnet32_d{draw}"] = ("net name=resnet32 seed=2", {"x": images, "target": labels})
    return cases


NET_DRAWS = 4


def random_cases(rng, count):
    """count cases of shapes no one chose (--random): convolutions with any
    stride, padding, dilation, groups, batch and size, their input in either
    image layout; the fused ops (batch norm + ReLU + conv, conv + batch norm +
    ReLU + pooling, batch norm + residual + ReLU, batch norm + ReLU + pooling);
    max, average and adaptive pooling; batch norm (some over 1x1 images)."""
    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def pick(*options):
        return options[rng.integers(len(options))]

    def channels():
        return int(pick(1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 65, 64, 96, 128))

    def size():
        return int(pick(8, 16, 32, rng.integers(1, 41)))

    cases = {}
    for i in range(count):
        kind = pick("conv2d", "conv2d", "conv2d", "bn_relu_conv", "conv_bn_relu_pool", "bn_add_relu",
                    "pool", "batch_norm", "bn_relu_pool")
        n, c, o = int(pick(1, 2, 3, 5, 8, 13)), channels(), channels()
        h, w = size(), size()
        cnhw = int(rng.integers(2))
        if kind == "pool":
            pool = pick("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
            if pool == "adaptive_avg_pool2d":
                out = int(rng.integers(1, min(h, w) + 1))
                cases[f"random{i}"] = (f"{pool} size={out} cnhw={cnhw}", {
                    "x": randn(n, c, h, w), "gy": randn(n, c, out, out)})
                continue
            k = int(rng.integers(1, 5))
            stride, padding = int(rng.integers(1, 5)), int(rng.integers(0, k // 2 + 1))
            h, w = max(h, k), max(w, k)
            oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
            cases[f"random{i}"] = (f"{pool} kernel={k} stride={stride} padding={padding} cnhw={cnhw}", {
                "x": randn(n, c, h, w), "gy": randn(n, c, oh, ow)})
            continue
        if kind in ("batch_norm", "bn_relu_pool"):
            n = max(n, 2)
            if kind == "bn_relu_pool":
                h, w = max(h, 2), max(w, 2)
                gy_shape = (n, c, h // 2, w // 2)
            else:
                h, w = (h, w) if cnhw or rng.integers(3) else (1, 1)
                gy_shape = (n, c, h, w)
            cases[f"random{i}"] = (f"{kind} cnhw={cnhw}", {
                "x": randn(n, c, h, w) * 2 + 1, "w": randn(c), "b": randn(c), "gy": randn(*gy_shape)})
            continue
        if kind == "bn_add_relu":
            n, h, w = max(n, 2), max(h, 2), max(w, 2)
            cases[f"random{i}"] = (f"bn_add_relu cnhw={cnhw}", {
                "x": randn(n, c, h, w) * 2 + 1, "w": randn(c), "b": randn(c), "r": randn(n, c, h, w),
                "gy": randn(n, c, h, w)})
            continue
        k = int(pick(3, 3, 3, 1, 2, 5))
        stride = int(pick(1, 1, 1, 2, 3)) if kind != "bn_relu_conv" else int(pick(1, 1, 2))
        padding = int(rng.integers(0, k + 1))
        dilation = int(pick(1, 1, 1, 1, 2)) if kind == "conv2d" else 1
        groups = 1
        if kind == "conv2d" and rng.integers(4) == 0:
            common = [g for g in (2, 3, 4, 8) if c % g == 0 and o % g == 0]
            groups = int(pick(*common)) if common else 1
        reach = dilation * (k - 1) + 1
        h, w = max(h, reach - 2 * padding), max(w, reach - 2 * padding)
        oh, ow = (h + 2 * padding - reach) // stride + 1, (w + 2 * padding - reach) // stride + 1
        if kind == "conv_bn_relu_pool":
            n = max(n, 2)
            if oh < 2 or ow < 2:
                h, w = h + 2 * stride, w + 2 * stride
                oh, ow = (h + 2 * padding - reach) // stride + 1, (w + 2 * padding - reach) // stride + 1
        bias = int(rng.integers(2))
        xgrad = int(rng.integers(2)) if kind == "conv_bn_relu_pool" else 1
        spec = (f"{kind} stride={stride} padding={padding} dilation={dilation} groups={groups} "
                f"bias={bias} cnhw={cnhw} xgrad={xgrad}")
        arrays = {"x": randn(n, c, h, w), "w": randn(o, c // groups, k, k) * 0.3}
        if bias:
            arrays["b"] = randn(o)
        if kind == "bn_relu_conv":
            arrays["x"] = arrays["x"] * 2 + 1
            arrays["g"], arrays["beta"] = randn(c), randn(c)
        if kind == "conv_bn_relu_pool":
            arrays["g"], arrays["beta"] = randn(o), randn(o)
            arrays["gy"] = randn(n, o, oh // 2, ow // 2)
        else:
            arrays["gy"] = randn(n, o, oh, ow)
        cases[f"random{i}"] = (spec, arrays)
    return cases


def reference(kind, params, arrays, dtype=torch.float64):
    """The PyTorch outputs for one case, in dtype: name -> array."""
    def tensor(array, grad=False):
        return torch.tensor(np.asarray(array), dtype=dtype, requires_grad=grad)

    extra = {}

    def batch_norm(x, weight, bias):
        """Training batch norm from running statistics 0 and 1, which go to extra."""
        rm, rv = torch.zeros(weight.shape[0], dtype=dtype), torch.ones(weight.shape[0], dtype=dtype)
        extra.update(running_mean=rm, running_var=rv)
        return F.batch_norm(x, rm, rv, weight, bias, True, 0.1, 1e-5)

    leaves = {k: tensor(v, True) for k, v in arrays.items() if k not in ("gy", "target")}
    gy = tensor(arrays["gy"]) if "gy" in arrays else None
    conv = {k: int(params.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1),
                                                   ("groups", 1))}
    if params.get("xgrad") == "0":
        leaves["x"].requires_grad_(False)
    if kind == "conv2d":
        y = F.conv2d(leaves["x"], leaves["w"], leaves.get("b"), **conv)
    elif kind == "bn_relu_conv":
        z = F.relu(batch_norm(leaves["x"], leaves["g"], leaves["beta"]))
        y = F.conv2d(z, leaves["w"], leaves.get("b"), **conv)
    elif kind == "conv_bn_relu_pool":
        z = F.conv2d(leaves["x"], leaves["w"], leaves.get("b"), **conv)
        y = F.max_pool2d(F.relu(batch_norm(z, leaves["g"], leaves["beta"])), 2)
    elif kind == "bn_relu_pool":
        y = F.max_pool2d(F.relu(batch_norm(leaves["x"], leaves["w"], leaves["b"])), 2)
    elif kind == "bn_add_relu":
        y = F.relu(batch_norm(leaves["x"], leaves["w"], leaves["b"]) + leaves["r"])
    elif kind == "batch_norm":
        y = batch_norm(leaves["x"], leaves["w"], leaves["b"])
    elif kind == "max_pool2d":
        y = F.max_pool2d(leaves["x"], int(params["kernel"]), int(params["stride"]),
                         int(params["padding"]))
    elif kind == "avg_pool2d":
        y = F.avg_pool2d(leaves["x"], int(params["kernel"]), int(params["stride"]),
                         int(params["padding"]))
    elif kind == "adaptive_avg_pool2d":
        y = F.adaptive_avg_pool2d(leaves["x"], int(params["size"]))
    elif kind == "linear":
        y = F.linear(leaves["x"], leaves["w"], leaves["b"])
    elif kind == "cross_entropy":
        y = F.cross_entropy(leaves["x"], torch.tensor(arrays["target"]),
                            label_smoothing=float(params["smoothing"]))
    else:
        raise ValueError(kind)
    y.backward(gy if gy is not None else torch.ones_like(y))
    out = {"y": y.detach().numpy()}
    out.update({"d" + k: v.grad.numpy() for k, v in leaves.items() if v.requires_grad})
    out.update({k: v.numpy() for k, v in extra.items()})
    return out


def net_reference(params, arrays, results, case, dtype=torch.float64):
    """The net's logits, loss and parameter gradients in PyTorch from cbnet's
    initial weights, in dtype."""
    model = ResNet32() if params["name"] == "resnet32" else convnet()
    prefix = case + "/state/"
    state = {k[len(prefix):]: torch.tensor(np.array(v)) for k, v in results.items()
             if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)
    model = model.to(dtype).train()
    logits = model(torch.tensor(np.asarray(arrays["x"]), dtype=dtype))
    loss = F.cross_entropy(logits, torch.tensor(arrays["target"]))
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": loss.detach().numpy()}
    for name, p in model.named_parameters():
        out["grad/" + name] = p.grad.numpy()
    return out


def net_errors(got, want):
    """Relative errors of a net's outputs; gradients relative to the net's
    largest gradient (a conv bias followed by batch norm has a gradient that is
    zero up to rounding, so its own scale means nothing). A ReLU whose
    pre-activation is within rounding of zero flips in float32 (PyTorch's too,
    depending on the inputs) and moves the gradients of the layers before it
    by up to ~3e-3 of the largest: so the nets are judged over several draws
    against PyTorch float32's own error."""
    scale = max(np.abs(v).max() for k, v in want.items() if k.startswith("grad/"))
    errors = {}
    for name, value in want.items():
        g = got.get(name)
        if g is None or np.shape(g) != np.shape(value):
            errors[name] = float("inf")
        elif name.startswith("grad/"):
            errors[name] = float(np.abs(np.asarray(g, np.float64) - value).max() / scale)
        else:
            errors[name] = rel_error(g, value)
    return errors


def rel_error(got, want, scale_of=None):
    """max |got - want| / max |want| (or max |scale_of|)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    scale = np.abs(want if scale_of is None else scale_of).max() if want.size else 0.0
    return float(np.abs(got - want).max() / scale) if scale > 0 else float(np.abs(got).max())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cbnet", default=os.path.join(here, "..", "build", "bin", "cbnet"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="N cases of random shapes instead of the fixed ones (seeded by --seed)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.random:
        cases = random_cases(np.random.default_rng(args.seed), args.random)
    else:
        cases = make_cases(np.random.default_rng(args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {f"{case}/{k}": v for case, (_, arrays) in cases.items() for k, v in arrays.items()}
        save_safetensors(os.path.join(tmp, "in.safetensors"), inputs,
                         {case: spec for case, (spec, _) in cases.items()})
        subprocess.run([args.cbnet, "run", os.path.join(here, "parity.lua"),
                        os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")],
                       check=True)
        results = load_safetensors(os.path.join(tmp, "out.safetensors"))
    worst, failures, nets = 0.0, 0, {}
    print(f"torch {torch.__version__}; tolerance {args.tolerance:g} (max abs error / max abs value)")
    for case, (spec, arrays) in cases.items():
        kind = spec.split()[0]
        params = dict(kv.split("=") for kv in spec.split()[1:])
        if kind == "net":
            # A whole net, on several draws (the last one judges them all):
            # the worst gradient error over the draws against the tolerance
            # or 10x PyTorch float32's own worst on the same draws.
            want = net_reference(params, arrays, results, case)
            mine = {k[len(case) + 1:]: v for k, v in results.items() if k.startswith(case + "/")}
            theirs32 = net_reference(params, arrays, results, case, torch.float32)
            ours, theirs = net_errors(mine, want), net_errors(theirs32, want)
            net = case.rsplit("_d", 1)[0]
            seen = nets.setdefault(net, {"ours": 0.0, "theirs": 0.0, "draws": 0})
            seen["ours"] = max(seen["ours"], max(ours.values()))
            seen["theirs"] = max(seen["theirs"], max(theirs.values()))
            seen["draws"] += 1
            print(f"     {case:22s} {spec:40s} logits {ours['logits']:.1e}, loss {ours['loss']:.1e}, "
                  f"{len(ours) - 2} gradients {max(ours.values()):.1e} (PyTorch float32: "
                  f"{max(theirs.values()):.1e})")
            if seen["draws"] == NET_DRAWS:
                top, bar = seen["ours"], max(args.tolerance, 10 * seen["theirs"])
                failures += top > bar
                worst = max(worst, top)
                print(f"{'FAIL' if top > bar else 'ok  '} {net:22s} worst of {NET_DRAWS} draws: "
                      f"gradients {top:.1e}, PyTorch float32's {seen['theirs']:.1e}")
            continue
        want = reference(kind, params, arrays)
        # PyTorch float32's own error on the same inputs: where the case is ill-conditioned
        # (batch norm over a few values, a ReLU or a pooling window's winner within rounding),
        # the bar is 10x that, as for the nets
        theirs = reference(kind, params, arrays, torch.float32)
        prefixes = sorted({k.split("/")[0] for k in results if k.split("/")[0].split("@")[0] == case})
        for prefix in prefixes:
            errors, bars = {}, {}
            for name, value in want.items():
                got = results.get(f"{prefix}/{name}")
                # a convolution's bias before batch norm: its gradient is zero up
                # to rounding, so judged on the scale of beta's (the same sums of
                # the normalised gradient)
                scale = want["dbeta"] if kind == "conv_bn_relu_pool" and name == "db" else None
                errors[name] = rel_error(got, value, scale) if got is not None else float("inf")
                bars[name] = max(args.tolerance, 10 * rel_error(theirs[name], value, scale))
            bad = {k: e for k, e in errors.items() if not e <= bars[k]}
            failures += len(bad)
            worst = max([worst] + [e for k, e in errors.items() if bars[k] == args.tolerance])
            detail = ", ".join(f"{k} {e:.1e}" + (f" (bar {bars[k]:.1e})" if bars[k] > args.tolerance else "")
                               for k, e in sorted(errors.items()))
            print(f"{'FAIL' if bad else 'ok  '} {prefix:22s} {spec:40s} {detail}")
    print(f"worst relative error {worst:.2e}; {failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
