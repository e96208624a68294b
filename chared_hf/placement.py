"""Where each member goes when an ensemble is loaded with ``device_map="auto"``.

What it does: ``plan_members(configs, dtypes, max_memory)`` builds every member on the meta
device (``accelerate.init_empty_weights``), sizes it with accelerate (``compute_module_sizes``,
in the dtype it will load in), and places whole members on the accelerators, the largest first,
each on the device with the most room left, so that members spread over the devices and no
member is split that fits one device. A member that fits no single device is split by
accelerate's own planner (``infer_auto_device_map`` with the member's ``_no_split_modules``)
over the room that is left. The result is one ``device_map`` per member, given to that
member's ``from_pretrained``.

What it does not do: place anything without accelerators (None: every member keeps the
caller's ``"auto"``, which Transformers resolves to the CPU), count activations or KV caches
(the room left on a device is what its members' weights leave), or move members later.
"""

from __future__ import annotations

import torch


def plan_members(configs: list, dtypes: list, max_memory: dict | None = None
                 ) -> list[dict] | None:
    """One ``device_map`` per member (``{"": device}`` for a whole member, accelerate's map
    for one split over devices), or None where the machine has no accelerator.

    ``configs``: each member's Transformers config; ``dtypes``: the dtype each loads in (None:
    its config's); ``max_memory``: accelerate's ``{device: bytes or "10GiB"}`` (default: what
    the devices have free)."""
    from accelerate import init_empty_weights
    from accelerate.utils import compute_module_sizes, get_max_memory, infer_auto_device_map
    from transformers import AutoModelForCausalLM

    memory = get_max_memory(dict(max_memory) if max_memory is not None else None)
    free = {d: int(room) for d, room in memory.items() if d not in ("cpu", "disk")}
    if not free:
        return None
    # Step 1: every member on the meta device, in its dtype; its size in bytes.
    models = []
    for config, dtype in zip(configs, dtypes, strict=True):
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
        models.append(model.to(dtype) if isinstance(dtype, torch.dtype) else model)
    sizes = [compute_module_sizes(m)[""] for m in models]
    # Step 2: the largest first, each whole on the device with the most room left, or split
    # by accelerate over the room left where no device can take it whole.
    maps: list[dict | None] = [None] * len(models)
    for i in sorted(range(len(models)), key=lambda i: -sizes[i]):
        device = max(free, key=free.get)
        if sizes[i] <= free[device]:
            maps[i] = {"": device}
            free[device] -= sizes[i]
            continue
        rest = {k: v for k, v in memory.items() if k in ("cpu", "disk")}
        split = infer_auto_device_map(models[i], max_memory={**free, **rest},
                                      no_split_module_classes=models[i]._no_split_modules)
        module_sizes = compute_module_sizes(models[i])
        for name, place in split.items():
            if place in free:
                free[place] -= module_sizes[name]
        maps[i] = dict(split)
    return maps
