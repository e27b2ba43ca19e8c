"""Device-independent instruments: what a block launches and how many bytes it
moves, counted without a GPU.

``hooks``           one patch of Triton's interpreter (launch boundaries, every
                    load and store), shared by the instruments below
``triton_traffic``  per Triton launch: bytes loaded and stored where the mask
                    is true, and the distinct bytes touched
``aten_log``        every aten op that computes or moves data, with the bytes
                    of its tensors (a ``TorchDispatchMode``)
``tensor_class``    which tensor an access hits: x-sized, weights, or other

Each is a context manager usable on its own; ``perf.traffic`` combines them
into rows of launches, bytes and passes."""
