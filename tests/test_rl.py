"""RL position sizer: reward arithmetic under the one cost model, funding, no look-ahead, seeded determinism,
save/load, MLflow, SAC and PPO.

Budgets are tiny (a thousand or two timesteps) so the module stays well under a minute on 2 cores; the notebook
and `benchmarks/bench_rl.py` show what the default curriculum learns.
"""
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env

from trade_matrix.backtest.accounting import funding_matrix
from trade_matrix.core import DataError, ModelError
from trade_matrix.research.rl import (FUNDING, TradingEnv, curriculum_frames, evaluate_policy, synthetic_signal_frame,
                                      train_policy, trading_pnl)
from trade_matrix.research.rl_evaluation import compare_with_kelly, load_logged_policy, log_policy
from trade_matrix.strategy.policy import EnvSpec, PPOSettings, RLConfig, RLPolicy, SACSettings
from trade_matrix.core import CostConfig
from trade_matrix.models.validation import next_bar_funding, strategy_returns
from trade_matrix.trader.config import TraderConfig

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

# a small, fast curriculum: short warm-up, small batches, short episodes
TINY = RLConfig(env=EnvSpec(episode_bars=128), sac=SACSettings(learning_starts=200, batch_size=64),
                ppo=PPOSettings(n_steps=256, batch_size=64, n_epochs=2), evaluations_per_stage=1, min_bars=32)


def hand_frame(returns=(0.01, -0.02, 0.03, 0.005, -0.01)) -> pd.DataFrame:
    n = len(returns)
    return pd.DataFrame({"signal": np.linspace(-2, 2, n), "confidence": 0.5, "p_Bear": 0.1, "p_Neutral": 0.6,
                         "p_Bull": 0.2, "p_Crisis": 0.1, "sigma": 0.01, "ret": list(returns)},
                        index=pd.date_range("2024-01-01", periods=n, freq="4h", tz="UTC"))


def rollout(frame, actions, spec=EnvSpec(episode_bars=10_000)):
    env = TradingEnv(frame, spec, seed=0)
    obs = [env.reset(options={"segment": 0, "start": 0})[0]]
    steps = []
    for a in actions:
        o, r, term, trunc, info = env.step(np.array([a], dtype=np.float32))
        obs.append(o)
        steps.append((r, term, trunc, info))
    return np.array(obs), steps


@pytest.fixture(scope="module")
def frame():
    return synthetic_signal_frame(2400, seed=5, ic=0.2)


@pytest.fixture(scope="module")
def sac_policy(frame):
    return train_policy(frame.iloc[:1800], "SYN", TINY.scaled(1500))


# --- environment -------------------------------------------------------------------------------------------

def test_reward_arithmetic_by_hand():
    _, steps = rollout(hand_frame(), [1, 1, -1, 0, 0.5])
    one_way = CostConfig().one_way                                    # fee + slippage per unit traded: 0.00075
    expected = [0.01 - one_way, -0.02, -0.03 - 2 * one_way, -one_way, -0.005 - 0.5 * one_way]
    np.testing.assert_allclose([s[3]["net"] for s in steps], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose([s[0] for s in steps], np.array(expected) * 100, rtol=0, atol=1e-9)
    assert steps[-1][1] and not any(s[1] for s in steps[:-1])          # the data ends: terminated
    assert math.isclose(steps[-1][3]["equity"], math.exp(sum(expected)), rel_tol=1e-12)
    # the vectorised accounting is the same, and equals the gates' validation.strategy_returns with the same costs
    np.testing.assert_allclose(trading_pnl(hand_frame(), [1, 1, -1, 0, 0.5])["net"], expected, atol=1e-12)
    ref = strategy_returns(np.array([1, 1, -1, 0, 0.5]), hand_frame()["ret"].to_numpy(), CostConfig())["net"].to_numpy()
    np.testing.assert_allclose(trading_pnl(hand_frame(), [1, 1, -1, 0, 0.5])["net"].to_numpy(), ref, atol=1e-15)
    funded = hand_frame().assign(**{FUNDING: [0.0, 1e-4, 1e-4, 0.0, 2e-4]})       # and with funding, too
    ref = strategy_returns(np.array([1, 1, -1, 0, 0.5]), funded["ret"].to_numpy(), CostConfig(), funding=funded[FUNDING].to_numpy())
    np.testing.assert_allclose(trading_pnl(funded, [1, 1, -1, 0, 0.5])["net"].to_numpy(), ref["net"].to_numpy(), atol=1e-15)


def test_a_unit_trade_costs_the_one_way_of_the_one_cost_model():
    assert EnvSpec().cost == TraderConfig().cost == CostConfig()
    pnl = trading_pnl(hand_frame(returns=(0.0, 0.0)), [1.0, 1.0])
    assert pnl["costs"].tolist() == [CostConfig().one_way, 0.0]       # no impact or spread of its own
    cheap = EnvSpec(cost=CostConfig(taker_fee=0.0001, slippage=0.0))
    assert trading_pnl(hand_frame(returns=(0.0,)), [-1.0], cheap)["costs"].iloc[0] == pytest.approx(0.0001, rel=1e-12)
    with pytest.raises(ValueError, match="Extra inputs"):
        EnvSpec(impact=0.0005)


def test_funding_is_charged_on_the_position_held_as_the_backtest_charges_it():
    # Arrange: 8h settlements on 4h rows, the rate lands where the research backtest lands it (two opens later)
    frame = synthetic_signal_frame(60, seed=2).drop(columns=FUNDING)
    settle = frame.index[frame.index == frame.index.floor("8h")]
    rates = pd.Series(np.random.default_rng(0).normal(0, 1e-3, len(settle)), index=settle)
    with_rates = frame.assign(**{FUNDING: next_bar_funding(rates, frame.index)})
    on_bars = funding_matrix({"A": rates}, frame.index, ["A"])[:, 0]      # where the research backtest charges them
    np.testing.assert_allclose(with_rates[FUNDING].to_numpy()[:-2], np.nan_to_num(on_bars[2:]), atol=1e-15)
    positions = np.sign(frame["signal"].to_numpy())
    # Act
    pnl = trading_pnl(with_rates, positions)
    _, steps = rollout(with_rates, positions)
    # Assert: longs pay a positive rate, shorts receive it; the environment and the vectorised accounting agree
    np.testing.assert_allclose(pnl["funding"], positions * with_rates[FUNDING], atol=1e-15)
    np.testing.assert_allclose([s[3]["funding"] for s in steps], pnl["funding"], atol=1e-15)
    np.testing.assert_allclose(pnl["net"], pnl["gross"] - pnl["fee"] - pnl["slippage"] - pnl["funding"], atol=1e-15)
    off = EnvSpec(cost=CostConfig(funding=False))
    assert (trading_pnl(with_rates, positions, off)["funding"] == 0).all()


def test_cost_multiplier_drawdown_penalty_and_caps():
    env = TradingEnv(hand_frame(), EnvSpec(drawdown_penalty=1.0, max_step=0.5), seed=0, cost_multiplier=2.0)
    env.reset(options={"segment": 0, "start": 0})
    info = [env.step(np.array([1.0], dtype=np.float32))[4] for _ in range(3)]
    assert [i["position"] for i in info] == [0.5, 1.0, 1.0]
    assert math.isclose(info[0]["costs"], 2 * 0.5 * CostConfig().one_way, rel_tol=1e-12)   # funding is never scaled
    assert info[0]["penalty"] == 0.0 and info[1]["penalty"] > 0 and info[2]["penalty"] == 0.0
    long_only = TradingEnv(hand_frame(), EnvSpec(long_only=True), seed=0)
    assert (long_only.action_space.low[0], long_only.action_space.high[0]) == (0.0, 1.0)
    long_only.reset(seed=0)
    assert long_only.step(np.array([-0.7], dtype=np.float32))[4]["position"] == 0.0


def test_check_env_and_bad_frames():
    for long in (False, True):
        check_env(TradingEnv(hand_frame(), EnvSpec(long_only=long, episode_bars=3), seed=0), skip_render_check=True)
    with pytest.raises(DataError, match="p_Crisis"):
        TradingEnv(hand_frame().drop(columns="p_Crisis"))
    with pytest.raises(DataError, match="NaN"):
        TradingEnv(hand_frame().assign(signal=[0, np.nan, 0, 0, 0]))


def test_observation_has_no_lookahead(frame):
    actions = np.cos(np.arange(400) * 0.37)
    full, _ = rollout(frame.iloc[:400], actions)
    for t in (0, 1, 57, 399):
        cut, _ = rollout(frame.iloc[:t + 1], actions[:t])
        np.testing.assert_array_equal(cut[t], full[t])
        future = frame.iloc[:400].copy()
        future.iloc[t:, future.columns.get_loc("ret")] = 0.3    # bar t's label and later: the future at t's close
        future.iloc[t + 1:, :] = 0.9
        changed, _ = rollout(future, actions[:t])
        np.testing.assert_array_equal(changed[t], full[t])


def test_curriculum_selectors(frame):
    calm = curriculum_frames(frame, "calm", min_bars=32)
    median = frame["sigma"].median()
    assert calm and all((s["sigma"] <= median).all() and (s["p_Crisis"] < 0.2).all() and len(s) >= 32 for s in calm)
    mixed = curriculum_frames(frame, "mixed", episode_bars=128, min_bars=32)
    assert len(mixed) % 2 == 0 and len(mixed) >= 2
    assert curriculum_frames(frame, "full")[0] is frame


# --- training ----------------------------------------------------------------------------------------------

def test_seeded_training_is_deterministic(frame, sac_policy):
    again = train_policy(frame.iloc[:1800], "SYN", TINY.scaled(1500))
    test = frame.iloc[1800:2000]
    a = evaluate_policy(sac_policy, test)["positions"].to_numpy()
    b = evaluate_policy(again, test)["positions"].to_numpy()
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(sac_policy.curve.drop(columns="seconds"), again.curve.drop(columns="seconds"))
    assert a.std() > 0                                        # it does something, the same thing twice


def test_sac_and_ppo_run_a_tiny_budget(frame, sac_policy):
    ppo = train_policy(frame.iloc[:1800], "SYN", TINY.model_copy(update={"algorithm": "PPO"}).scaled(1024))
    for policy in (sac_policy, ppo):
        assert list(policy.curve["stage"]) == ["start", "calm", "mixed", "full"]
        assert policy.curve["timesteps"].iloc[-1] >= policy.config.total_timesteps
        assert policy.model.num_timesteps == policy.curve["timesteps"].iloc[-1]
        out = evaluate_policy(policy, frame.iloc[1800:])
        assert out["metrics"]["bars"] == 600 and np.abs(out["positions"]).max() <= 1.0
    assert type(ppo.model).__name__ == "PPO" and type(sac_policy.model).__name__ == "SAC"
    table = compare_with_kelly(sac_policy, frame.iloc[1800:], np.sign(frame["signal"].iloc[1800:].to_numpy()))
    assert list(table.index) == ["RL", "Kelly", "always long", "flat"]
    assert table.loc["flat", "sharpe_net"] == 0.0 and table.loc["always long", "annual_turnover"] > 0


def test_act_matches_sb3_predict_and_refuses_bad_inputs(sac_policy):
    spec = sac_policy.spec
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = np.array([rng.uniform(*spec.bounds(n)) for n in spec.observation], dtype=np.float32)
        sb3, _ = sac_policy.model.predict(obs, deterministic=True)
        assert math.isclose(sac_policy.act(obs), float(np.clip(sb3[0], -1, 1)), abs_tol=1e-6)
    good = dict(zip(spec.observation, [1.0, 0.6, 0.1, 0.6, 0.2, 0.1, 0.0, 0.01]))
    assert -1.0 <= sac_policy.act(good) <= 1.0
    with pytest.raises(ModelError, match="NaN"):
        sac_policy.act(good | {"p_Bull": float("nan")})
    with pytest.raises(ModelError, match="lacks"):
        sac_policy.act({k: v for k, v in good.items() if k != "drawdown"})
    with pytest.raises(ModelError, match="values"):
        sac_policy.act(np.zeros(3))


def test_save_load_round_trip_and_corruption(tmp_path, sac_policy, frame):
    path = sac_policy.save(tmp_path / "policy")
    loaded = RLPolicy.load(path)
    test = frame.iloc[1800:]
    np.testing.assert_array_equal(evaluate_policy(loaded, test)["positions"], evaluate_policy(sac_policy, test)["positions"])
    assert loaded.spec == sac_policy.spec and loaded.config == sac_policy.config
    assert loaded.trained_until == sac_policy.trained_until
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    blob = bytearray((bad / "model.zip").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bad / "model.zip").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="corrupt or was altered"):
        RLPolicy.load(bad)
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        RLPolicy.load(bad)
    with pytest.raises(ModelError, match="missing"):
        RLPolicy.load(tmp_path / "nowhere")


def test_mlflow_round_trip(tmp_path, sac_policy, frame):
    import mlflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    test = frame.iloc[1800:]
    oos = evaluate_policy(sac_policy, test)["metrics"]
    run_id = log_policy(sac_policy, uri, tmp_path / "artifacts", metrics={"oos_sharpe_net": oos["sharpe_net"]})
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["config.algorithm"] == "SAC" and run.data.params["env.cost.taker_fee"] == "0.00055"
    assert math.isclose(run.data.metrics["oos_sharpe_net"], oos["sharpe_net"], rel_tol=1e-9)
    history = client.get_metric_history(run_id, "curve.holdout_sharpe_net")
    assert [m.step for m in history] == list(sac_policy.curve["timesteps"])
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith("file://")
    loaded = load_logged_policy(uri, run_id)
    np.testing.assert_array_equal(evaluate_policy(loaded, test)["positions"], evaluate_policy(sac_policy, test)["positions"])


def test_training_respects_until(frame):
    cut = frame.index[999]
    policy = train_policy(frame, "SYN", TINY.scaled(300), until=cut)
    assert policy.trained_until == cut.strftime("%Y-%m-%dT%H:%M:%SZ")
    # a row is used when its label (the next bar's return) was known by `cut`: open time + 2 bars <= cut
    assert policy.data["last_bar"] == frame.index[997].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert policy.data["train_bars"] + policy.data["holdout_bars"] == 998
