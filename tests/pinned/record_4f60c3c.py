"Recorded the pinned NASH run (tests/pinned/nash_4f60c3c.json) with the code of commit 4f60c3c, before the house refactor (issue 8). Kept for provenance: it runs only against that commit."
import hashlib, json, sys
import torch
from nash_lit.arch import seed_arch
from nash_lit.nash import NashConfig, nash
from nash_lit.train import TrainConfig, synthetic
torch.set_num_threads(1)

def fingerprint(state):
    h = hashlib.sha256()
    for k, v in sorted(state.items()):
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

hashes = []
class Hashing:
    def submit(self, fn, task):
        out = fn(task)
        hashes.append((list(task.rng), fingerprint(out["state"]) if "state" in out else None))
        class F:
            def result(self_, timeout=None): return out
            def done(self_): return True
        return F()

data = synthetic(512, 128, 32, seed=0)
cfg = NashConfig(n_steps=3, n_child=3, n_op=3, n_epochs=2, seed_epochs=2, calib_size=32, seed=5,
                 operators=("deeper", "wider", "add_skip", "concat_skip"),
                 train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False))
res = nash(seed_arch((8, 16, 16)), data, cfg, executor=Hashing())
log = res.log
out = dict(records=[dict(id=int(r.id), step=int(r.step), child=int(r.child), ops=list(r.ops), val_error=float(r.val_error),
                         arch=r.arch, params=int(r.params), flops=int(r.flops)) for r in log.itertuples()],
           hashes=hashes, best=dict(id=res.id, step=res.step, val_error=res.val_error, weights=fingerprint(res.net.state_dict())))
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out["best"]), len(out["records"]))
