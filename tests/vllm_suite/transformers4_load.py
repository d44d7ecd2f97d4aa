"""Run by transformers 4.x's python (its own venv): load a LLaVA folder, report what did not load, save logits.

Usage: python transformers4_load.py FOLDER INPUTS.npz OUT.npy   (INPUTS: input_ids, pixel_values)
"""

import json
import sys

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

folder, inputs, out = sys.argv[1:4]
model, info = LlavaForConditionalGeneration.from_pretrained(folder, output_loading_info=True, dtype=torch.float32)
data = np.load(inputs)
with torch.inference_mode():
    logits = model(input_ids=torch.from_numpy(data["input_ids"]), pixel_values=torch.from_numpy(data["pixel_values"]))
np.save(out, logits.logits[0].float().numpy())
print(json.dumps({key: sorted(value) for key, value in info.items() if value}))
