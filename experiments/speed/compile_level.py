import torch, time
torch.set_num_threads(1)
def T(fn, n=30):
    for _ in range(5): fn()
    best=1e9
    for _ in range(5):
        t=time.perf_counter()
        for _ in range(n): fn()
        best=min(best,(time.perf_counter()-t)/n*1e6)
    return best
k, B, n, nL, D = 5, 500, 256, 10, 784
H = torch.randn(k, B, n); Z = torch.tanh(H); eL = torch.randn(B, nL); E = torch.randn(k, n, nL)*0.05; x = torch.rand(B, D)
def level(H, Z, eL, E, x, beta: float):
    Y = torch.tanh(H - beta * torch.matmul(eL, E.transpose(1, 2)))
    err = Z - Y
    norms = torch.linalg.vector_norm(err, dim=2).mean(1)
    dW1 = err[0].t() @ x / B
    dW = torch.bmm(err[1:].transpose(1, 2), Z[:-1]) / B
    db = err.sum(1) / B
    return err, norms, dW1, dW, db
t0 = T(lambda: level(H, Z, eL, E, x, 0.1))
s = time.time()
cl = torch.compile(level, dynamic=False)
cl(H, Z, eL, E, x, 0.1)
print("compile s", time.time() - s)
t1 = T(lambda: cl(H, Z, eL, E, x, 0.1))
print("eager", t0, "compiled", t1)
