#!/usr/bin/env python
"""Run a lava-dl netx HDF5 network in Lava's bit-accurate CPU simulation
(fixed_pt process models) and record every layer's output spikes.

usage:
  run_netx.py NET.net --input X.npy --T 24 --out OUT.npz
              [--reset-interval N] [--reset-offset K] [--layers N]
              [--spike-input]

Input
  default       X.npy = integer bias_mant of the input layer, HDF5 order
                (C, H, W) (or (N,) for a 1-D input layer).  It is transposed to
                Lava's (x, y, c) = (W, H, C) order and written to
                net.in_layer.neuron.bias_mant.init (as lava-dl's tests do).
  --spike-input X.npy = 0/1 spikes, shape (n_inputs, T') or (*net.inp.shape, T'),
                sent through io.source.RingBuffer -> net.inp.  (n_inputs, T')
                is reshaped C-order to net.inp.shape (Lava order).  T' < T is
                zero-padded (a RingBuffer source would otherwise loop); T' > T
                is truncated.

Output npz (all arrays are exactly as Lava returns them)
  layer{i}        output spikes of layer i for t = 1..T, shape
                  (*layer.out.shape, T), Lava order: (x, y, c, t) = (W, H, C, t)
                  for conv/input layers, (n, t) for dense layers.
                  int32.  Recorded on layer.out by a sink with the semantics
                  of io.sink.RingBuffer(buffer=T) fixed_pt (lavarec/
                  fast_sink.py MemmapSink, or --recorder ringbuffer):
                  column t-1 holds what the layer emitted in time step t.
  layer{i}_shape  layer.out.shape
  layer{i}_type   block type (Input/Conv/Dense/...)
  layer{i}_v, layer{i}_u   neuron v and u after step T (if the neuron has them)
  axes            text description of the axis order
  num_layers, T, reset_interval, reset_offset, spike_input, wall_s_build,
  wall_s_run
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc import io  # noqa: E402
from lavarec.fast_sink import MemmapSink  # noqa: E402
from netx_notorch import HAVE_TORCH, netx  # noqa: E402

AXES = ('layer{i}: int32 (*layer.out.shape, T) in Lava order; conv/input layers '
        '(x, y, c, t) = (W, H, C, t), dense layers (n, t); column t-1 = spikes '
        'emitted in simulation step t (t = 1..T). layer{i}_v/_u: neuron state '
        'after step T, shape layer.out.shape (same x, y, c order).')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('net')
    ap.add_argument('--input', required=True)
    ap.add_argument('--T', type=int, required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--reset-interval', type=int, default=None)
    ap.add_argument('--reset-offset', type=int, default=0)
    ap.add_argument('--layers', type=int, default=None,
                    help='num_layers passed to netx.hdf5.Network')
    ap.add_argument('--spike-input', action='store_true')
    ap.add_argument('--ain-input', action='store_true',
                    help='X.npy (HDF5 order) sent every step straight to the input layer neuron\'s a_in (a '
                         'sigma-delta network\'s input, as lava-dl\'s PilotNet SDNN test feeds it)')
    ap.add_argument('--no-state', action='store_true',
                    help='do not read v/u after the run (saves ~30 us per '
                         'neuron and variable)')
    ap.add_argument('--recorder', choices=['memmap', 'ringbuffer'],
                    default='memmap',
                    help='memmap (default): lavarec.fast_sink.MemmapSink, '
                         'same data as io.sink.RingBuffer fixed_pt but read '
                         'from a file; ringbuffer: io.sink.RingBuffer + '
                         'data.get() (very slow for big layers)')
    a = ap.parse_args(argv)
    T = a.T

    t0 = time.time()
    net = netx.hdf5.Network(net_config=a.net, num_layers=a.layers,
                            reset_interval=a.reset_interval,
                            reset_offset=a.reset_offset)
    print(net)
    x = np.load(a.input)

    if a.ain_input:
        b = np.asarray(x)
        if b.ndim > 1:
            b = b.transpose(tuple(range(b.ndim))[::-1])  # (C,H,W)->(W,H,C)
        data = np.repeat(np.round(b).astype(int)[..., None], T, axis=-1)
        source = io.source.RingBuffer(data=data)
        source.s_out.connect(net.in_layer.neuron.a_in)
    elif a.spike_input:
        shape = tuple(net.inp.shape)
        if x.ndim == 2 and len(shape) > 1:
            x = x.reshape(shape + (x.shape[-1],))
        if tuple(x.shape[:-1]) != shape:
            sys.exit(f'spike input shape {x.shape} does not fit net.inp '
                     f'{shape} (+ time)')
        if x.shape[-1] < T:
            x = np.concatenate(
                [x, np.zeros(shape + (T - x.shape[-1],), x.dtype)], -1)
        x = x[..., :T]
        source = io.source.RingBuffer(data=x)
        source.s_out.connect(net.inp)
    else:
        shape = tuple(net.in_layer.neuron.bias_mant.shape)
        b = np.asarray(x)
        if b.ndim > 1:
            b = b.transpose(tuple(range(b.ndim))[::-1])  # (C,H,W)->(W,H,C)
        if tuple(b.shape) != shape:
            sys.exit(f'bias input {x.shape} -> {b.shape} does not fit '
                     f'in_layer bias_mant {shape}')
        if not np.array_equal(b, np.round(b)):
            print('warning: non-integer bias values are rounded')
        net.in_layer.neuron.bias_mant.init = np.round(b).astype(int)

    sinks = []
    tmpdir = tempfile.TemporaryDirectory(prefix='run_netx_')
    for i, layer in enumerate(net.layers):
        if a.recorder == 'memmap':
            s = MemmapSink(shape=layer.out.shape, buffer=T,
                           filename=os.path.join(tmpdir.name, f'l{i}.npy'))
        else:
            s = io.sink.RingBuffer(shape=layer.out.shape, buffer=T)
        layer.out.connect(s.a_in)
        sinks.append(s)
    t1 = time.time()

    net.run(condition=RunSteps(num_steps=T),
            run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))
    t2 = time.time()
    res = {}
    try:
        for i, (layer, s) in enumerate(zip(net.layers, sinks)):
            res[f'layer{i}'] = (s.read() if a.recorder == 'memmap'
                                else s.data.get().astype(np.int32))
            res[f'layer{i}_shape'] = np.array(layer.out.shape)
            res[f'layer{i}_type'] = np.array(type(layer).__name__)
            if not a.no_state:
                for var in ('v', 'u', 'sigma', 'act'):
                    if hasattr(layer.neuron, var):
                        res[f'layer{i}_{var}'] = getattr(layer.neuron,
                                                         var).get()
    finally:
        net.stop()
        tmpdir.cleanup()
    t3 = time.time()
    res.update(axes=np.array(AXES), num_layers=len(net.layers), T=T,
               reset_interval=-1 if a.reset_interval is None
               else a.reset_interval,
               reset_offset=a.reset_offset, spike_input=a.spike_input,
               wall_s_build=t1 - t0, wall_s_run=t2 - t1)
    np.savez_compressed(a.out, **res)
    print(f'torch: {HAVE_TORCH}; build {t1 - t0:.1f}s, run {t2 - t1:.1f}s, '
          f'readout {t3 - t2:.1f}s; saved {a.out}')
    for i in range(len(net.layers)):
        r = res[f'layer{i}']
        print(f'  layer{i} {res[f"layer{i}_type"]} {r.shape} '
              f'spikes={int(np.count_nonzero(r))}')


if __name__ == '__main__':
    main()
