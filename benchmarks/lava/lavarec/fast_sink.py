"""MemmapSink: a drop-in replacement for lava.proc.io.sink.RingBuffer whose
ProcessModel writes each time step's input into a .npy memmap file instead of
a Lava Var.  Reading a big RingBuffer back with `sink.data.get()` is very slow
in Lava 0.10 (the runtime ships arrays one element per message, ~30 us per
element); the memmap is read directly from disk after the run instead.

Semantics match io.sink.RingBuffer's fixed_pt model (PyReceiveModelFixed):
int32 data, column (time_step - 1) % buffer holds the input of that step.
This module must stay alone in its package dir with no side effects at import:
Lava's compiler execs every .py file next to a Process's module.
"""
import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


class MemmapSink(AbstractProcess):
    def __init__(self, shape, buffer, filename):
        shape = tuple(int(s) for s in shape)
        mm = np.lib.format.open_memmap(filename, mode='w+', dtype=np.int32,
                                       shape=shape + (int(buffer),))
        del mm  # zero-filled file created here, filled by the model
        super().__init__(shape=shape, buffer=buffer, filename=filename)
        self.a_in = InPort(shape=shape)
        self.filename = filename

    def read(self):
        return np.array(np.load(self.filename, mmap_mode='r'))


@implements(proc=MemmapSink, protocol=LoihiProtocol)
@requires(CPU)
@tag('fixed_pt', 'floating_pt')
class PyMemmapSinkModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._mm = None

    def run_spk(self):
        data = self.a_in.recv()
        if self._mm is None:
            self._mm = np.load(self.proc_params['filename'], mmap_mode='r+')
        self._mm[..., (self.time_step - 1) % self._mm.shape[-1]] = data
        self._mm.flush()
