"""Write the model cards of the shipped discriminators (cartoon_d, toon_d) with a measured figure.

    .venv/bin/python tools/discriminator_cards.py

The figure: the discriminator's logits on 256 held-out-order data images against 256 raw samples
of its own generator, and the real-vs-fake accuracy at logit 0 (how far it still separates them).
Needs the data folders the styles were trained on (toon3d data cartoons|toon --size 64).
"""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import json, torch
from pathlib import Path
from safetensors import safe_open
from toon3d.train.ship import write_discriminator_card
from toon3d.stylegan2.checkpoints import load_discriminator
from toon3d.models import resolve_generator
from toon3d.data.dataset import FaceDataset
torch.set_num_threads(2)
W=Path('toon3d/weights')
for name, data in (("cartoon","/work/data/cartoons64"),("toon","/work/data/toon64a")):
    p=W/f"{name}_d.safetensors"
    with safe_open(str(p),'pt') as f: phases=json.loads(f.metadata()['meta'])['phases']
    d=load_discriminator(p).float().eval()
    ds=FaceDataset(data, size=64, flip=False)
    real=torch.stack([ds[len(ds)-1-i]["image"] for i in range(256)])
    g=resolve_generator(name, blend=False).generator.float().eval()
    with torch.no_grad():
        fake=torch.cat([g([torch.randn(64,g.style_dim,generator=torch.Generator().manual_seed(100+i))])[0] for i in range(4)])
        lr, lf = d(real).squeeze(1), d(fake).squeeze(1)
    acc=((lr>0).float().mean()+(lf<0).float().mean()).item()/2
    figs={"D logit, 256 data images (the last of the folder) vs 256 raw samples of its generator (re-measure: python tools/discriminator_cards.py)":
          f"real {lr.mean():.3f} ± {lr.std():.3f}, fake {lf.mean():.3f} ± {lf.std():.3f}; real-vs-fake accuracy at 0: {acc:.3f}",
          "data": f"{data} (images only)"}
    print(name, figs)
    write_discriminator_card(p, name, phases, figs)
