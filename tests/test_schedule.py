from ts_compile import TaylorSeerOptions, computed_steps, flops_speedup, is_computed_step


def test_official_flux_schedule():
    # Reference section 3: N=6, first_enhance=3, 50 steps -> 0,1,2,8,14,...,44 (10 of 50, 4.99x).
    opts = TaylorSeerOptions(interval=6, warmup=3)
    assert computed_steps(opts, 50) == [0, 1, 2, 8, 14, 20, 26, 32, 38, 44]
    assert abs(flops_speedup(opts, 50) - 5.0) < 1e-9


def test_cooldown_needs_and_uses_num_steps():
    opts = TaylorSeerOptions(interval=5, warmup=2, cooldown=3, num_steps=20)
    assert computed_steps(opts, 20) == [0, 1, 6, 11, 16, 17, 18, 19]
    # A pipeline's step count overrides the option's.
    assert is_computed_step(8, opts, num_steps=10) and not is_computed_step(8, opts)


def test_explicit_schedule_overrides_rule():
    opts = TaylorSeerOptions(schedule=[0, 4, 5], interval=1)
    assert computed_steps(opts, 8) == [0, 4, 5]


def test_interval_one_computes_everything():
    assert computed_steps(TaylorSeerOptions(interval=1, warmup=1), 7) == list(range(7))
