"""The training loop on a real rendered dataset: learning, checkpoints, exact resume, CLI."""

import json
import math
from dataclasses import replace

import pytest
import torch
from test_model import TINY

from umtune.cli import main
from umtune.config import PRESETS, DataConfig, RunConfig, TrainConfig, preset
from umtune.data import Dataset
from umtune.trainable.checkpoint import load_checkpoint, load_model, save_checkpoint
from umtune.trainable.loop import (
    Trainer,
    confusion_penalty,
    decoder_mask_fraction,
    draw_batch,
    heldout_batch,
    learning_rate,
    span_mask,
    splice,
    train,
)
from umtune.trainable.model import codes_to_input, encoder_receptive_field
from umtune.trainable.run_folder import LocalRun


def tiny_run(data_path, **train) -> RunConfig:
    return RunConfig(
        data=DataConfig(path=str(data_path), segment_samples=400, batch_per_domain=2),
        model=replace(TINY, domains=("piano", "flute")),
        train=TrainConfig(**{"steps_per_epoch": 3, "max_epochs": 2, "eval_segments": 2,
                             "lr": 3e-3, **train}),
    )


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_lowers_heldout_ce_and_reports_every_epoch(tiny_dataset, tmp_path):
    """200 steps lower the held-out CE by half a nat; each epoch reports all metrics once."""
    cfg = tiny_run(tiny_dataset, max_epochs=8, steps_per_epoch=25, lr=1e-2)
    run = LocalRun(tmp_path / "run", echo=False)
    train(cfg, report=run)
    history = run.history()
    assert [m["epoch"] for m in history] == list(range(1, 9))
    assert history[-1]["step"] == 200
    assert history[-1]["heldout_ce"] < history[0]["heldout_ce"] - 0.5
    for key in ("train_ce", "heldout_ce", "confusion_acc", "lr", "samples_per_s",
                "heldout_confusion_acc", "heldout_latent_gain", "heldout_ce/piano",
                "heldout_ce_cold", "heldout_latent_gain_cold"):
        assert key in history[-1]


@pytest.mark.parametrize("switches", [{}, {"decoder_self_inputs": 0.5}])
def test_resume_continues_exactly(tiny_dataset, tmp_path, switches):
    """N steps, save, resume for N more == 2N steps straight (same seed): identical weights,
    also where each step draws from the decoders (decoder_self_inputs)."""
    straight = LocalRun(tmp_path / "straight", echo=False)
    done = train(tiny_run(tiny_dataset, max_epochs=2, **switches), report=straight)

    first = LocalRun(tmp_path / "split", echo=False)
    train(tiny_run(tiny_dataset, max_epochs=1, **switches), report=first)
    resumed = train(tiny_run(tiny_dataset, max_epochs=2, **switches), report=first,
                    resume=first.checkpoint)

    assert resumed.step_count == done.step_count == 6
    for name, value in done.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [m["epoch"] for m in first.history()] == [1, 2]
    assert first.history()[1]["train_ce"] == straight.history()[1]["train_ce"]


def test_checkpoint_round_trip_restores_model_optimizers_and_config(tiny_dataset, tmp_path):
    """save_checkpoint then load (weights_only) gives back every tensor and the config."""
    cfg = tiny_run(tiny_dataset)
    trainer = Trainer(cfg, Dataset.open(tiny_dataset))
    trainer.step()
    path = save_checkpoint(trainer.state(), tmp_path / "ckpt")
    state = load_checkpoint(path)
    assert state.config == cfg and state.step == 1
    fresh = Trainer(cfg, Dataset.open(tiny_dataset))
    fresh.load(state)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, fresh.model.state_dict()[name])
    assert fresh.opt_ae.state_dict()["state"][0]["step"] == 1
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dirs left


def test_a_run_saved_with_unfused_adam_resumes_fused_and_steps_as_adam(tiny_dataset, tmp_path):
    """Checkpoints from before fused Adam keep their moments and go on fused; a fused step
    moves the weights as the unfused one does (to float32 rounding)."""
    cfg = tiny_run(tiny_dataset)
    old = Trainer(cfg, Dataset.open(tiny_dataset))
    for optimizer in (old.opt_ae, old.opt_c):
        optimizer.param_groups[0]["fused"] = False
    old.step()
    path = save_checkpoint(old.state(), tmp_path / "ckpt")
    resumed = Trainer(cfg, Dataset.open(tiny_dataset))
    resumed.load(load_checkpoint(path))
    assert [o.param_groups[0]["fused"] for o in (resumed.opt_ae, resumed.opt_c)] == [True, True]
    old.step()
    resumed.step()
    for name, value in old.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-5,
                                   atol=1e-6, msg=name)


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    """A file that is not a checkpoint names itself in the error."""
    (tmp_path / "state.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable umtune checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no state.pt"):
        load_checkpoint(tmp_path / "missing")


def test_train_and_translate_cli_end_to_end(tiny_dataset, tmp_path, capsys):
    """`umtune train` writes a run; `umtune translate` turns a held-out file into a wav."""
    import soundfile as sf

    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(tiny_dataset), "--out", str(run),
                 "--set", "train.steps_per_epoch=2", "--set", "train.max_epochs=1",
                 "--set", "data.segment_samples=800", "--set", "train.eval_segments=2",
                 "--set", "train.indicator_seconds=0.3"]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "receptive field" in out
    assert json.loads((run / "config.json").read_text())["train"]["max_epochs"] == 1
    # resume continues the same run directory for one more epoch
    assert main(["train", "--resume", str(run), "--set", "train.max_epochs=2"]) == 0
    history = LocalRun(run).history()
    assert [m["epoch"] for m in history] == [1, 2]
    # the leading indicators of analysis/indicators.py, every epoch
    assert all(0 <= m["pitch_probe_acc"] <= 1 and m["pitch_probe_chance"] == 0.25
               and -1 <= m["recon_chroma"] <= 1 for m in history)

    source = Dataset.open(tiny_dataset)
    entry = source.files("whistle", "heldout")[0]
    clip = tmp_path / "whistle.wav"
    sf.write(clip, source.audio(entry)[:8000], 16000)
    sf.write(tmp_path / "clip44k.flac", source.audio(entry)[:22050], 44100)
    assert main(["translate", "--checkpoint", str(run), "--to", "flute",  # its newest
                 str(clip), str(tmp_path / "clip44k.flac"), "-o", str(tmp_path / "out")]) == 0
    audio, sr = sf.read(tmp_path / "out" / "whistle_to_flute.wav")
    assert sr == 16000 and len(audio) == 8000 and abs(audio).max() > 0
    audio44, _ = sf.read(tmp_path / "out" / "clip44k_to_flute.wav")
    assert len(audio44) == 8000  # 0.5 s at 44.1 kHz resampled to 16 kHz


def test_translate_cli_errors_name_the_problem(tiny_dataset, tmp_path, capsys):
    """Unknown domain, bad checkpoint, bad audio and a bad temperature each give exit 2 and a
    clear message."""
    cfg = tiny_run(tiny_dataset, max_epochs=1, steps_per_epoch=1)
    run = LocalRun(tmp_path / "run", echo=False)
    train(cfg, report=run)
    good = tmp_path / "good.wav"
    import soundfile as sf

    sf.write(good, Dataset.open(tiny_dataset).audio(
        Dataset.open(tiny_dataset).files("piano", "heldout")[0])[:4000], 16000)
    bad = tmp_path / "bad.wav"
    bad.write_text("hello")
    cases = [
        (["--checkpoint", str(run.checkpoint), "--to", "banjo", str(good)], "unknown target"),
        (["--checkpoint", str(tmp_path), "--to", "flute", str(good)], "no state.pt"),
        (["--checkpoint", str(run.checkpoint), "--to", "flute", str(bad)], "bad.wav"),
        (["--checkpoint", str(run.checkpoint), "--to", "flute", "--temperature", "0", str(good)],
         "temperature=0.0: expected a finite number > 0"),
    ]
    for args, message in cases:
        assert main(["translate", *args, "-o", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err


def test_bf16_autocast_runs_the_convolutions_in_bf16_and_still_learns(tiny_dataset, tmp_path):
    """precision=bf16 (the cpu preset's): the decoders compute in bfloat16 under autocast,
    the weights stay fp32, and 200 steps lower the held-out CE as in fp32."""
    cfg = tiny_run(tiny_dataset, max_epochs=8, steps_per_epoch=25, lr=1e-2, precision="bf16")
    trainer = Trainer(cfg, Dataset.open(tiny_dataset))
    seen = []
    decoder = trainer.model.decoders["piano"]
    decoder.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer.step()
    assert seen == [torch.bfloat16] and decoder.layers[0].dilated.weight.dtype == torch.float32
    run = LocalRun(tmp_path / "run", echo=False)
    train(cfg, report=run)
    history = run.history()
    assert history[-1]["heldout_ce"] < history[0]["heldout_ce"] - 0.5


def test_cpu_preset_is_tiny_at_8khz_with_a_long_field_the_content_loss_and_no_standardising():
    """No preset removes the clip's absolute pitch (issue 19): the latent is never standardised."""
    tiny, cpu = preset("tiny"), preset("cpu")
    assert not any(preset(name).model.encoder.normalize_latent for name in PRESETS)
    assert cpu.model.encoder == replace(tiny.model.encoder, blocks=1, layers_per_block=11)
    assert encoder_receptive_field(cpu.model.encoder) == 4097
    assert cpu.data == replace(tiny.data, sample_rate=8000)
    assert (cpu.model.decoder.residual_channels, cpu.model.decoder.gate_channels,
            cpu.model.decoder.skip_channels) == (64, 128, 64)
    assert cpu.model.content_head and cpu.train.content_loss_weight == 1.0
    assert cpu.train == replace(tiny.train, steps_per_epoch=100, lr=2e-3, ema_decay=0.999,
                                confusion_lambda=0.1, content_loss_weight=1.0,
                                decoder_mask_fraction=0.25, decoder_mask_span=512,
                                decoder_input_drift=0.03)


def test_decoder_input_noise_is_drawn_for_the_global_batch_and_only_in_training(tiny_dataset):
    """With `decoder_input_noise` the decoders' input is the clean input plus N(0, std^2) noise
    in training batches; held-out batches and the encoder's input stay clean, and each of two
    ranks gets its own rows of the one-worker batch's noise."""
    cfg = tiny_run(tiny_dataset, decoder_input_noise=0.1)
    cfg = replace(cfg, data=replace(cfg.data, batch_per_domain=4, segment_samples=2000))
    data = Dataset.open(tiny_dataset)
    whole = draw_batch(cfg, data, step=3, split="train", augment=True)
    noise = whole.decoder_inputs - whole.clean_inputs
    assert abs(noise.std().item() - 0.1) < 0.005 and abs(noise.mean().item()) < 0.005
    plain = draw_batch(replace(cfg, train=replace(cfg.train, decoder_input_noise=0.0)), data,
                       step=3, split="train", augment=True)
    assert torch.equal(plain.decoder_inputs, plain.clean_inputs)
    assert torch.equal(plain.inputs, whole.inputs)  # the pitch shifts are drawn as before
    heldout = draw_batch(cfg, data, step=3, split="heldout", augment=False)
    assert torch.equal(heldout.decoder_inputs, heldout.clean_inputs)
    for rank in (0, 1):
        part = draw_batch(cfg, data, step=3, split="train", augment=True, rank=rank,
                          world_size=2)
        rows = [k * 4 + i for k in range(2) for i in range(rank, 4, 2)]
        torch.testing.assert_close(part.decoder_inputs - part.clean_inputs, noise[rows])


def test_every_training_seed_is_scored_on_the_same_heldout_segments(tiny_dataset):
    """Held-out CE compares runs of different seeds on the same audio; training batches differ."""
    data = Dataset.open(tiny_dataset)
    seeds = [tiny_run(tiny_dataset, seed=s) for s in (0, 1)]
    a, b = (heldout_batch(cfg, data) for cfg in seeds)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.clean_inputs, b.clean_inputs)
    train_a, train_b = (draw_batch(cfg, data, step=0, split="train", augment=False)
                        for cfg in seeds)
    assert not torch.equal(train_a.targets, train_b.targets)


def test_pre_emphasis_shapes_what_the_decoders_model_not_what_the_encoder_hears(tiny_dataset):
    """With `model.pre_emphasis` the targets and the decoders' input are the emphasised codes;
    the encoder's inputs (clean and pitch-shifted) are the plain audio's, as without it, so
    the latent keeps the notes' fundamentals."""
    cfg = tiny_run(tiny_dataset)
    emphasised = replace(cfg, model=replace(cfg.model, pre_emphasis=0.85))
    data = Dataset.open(tiny_dataset)
    for split, augment in (("train", True), ("heldout", False)):
        plain = draw_batch(cfg, data, step=3, split=split, augment=augment)
        batch = draw_batch(emphasised, data, step=3, split=split, augment=augment)
        assert torch.equal(batch.inputs, plain.inputs)
        assert torch.equal(batch.clean_inputs, plain.clean_inputs)
        assert not torch.equal(batch.targets, plain.targets)
        torch.testing.assert_close(batch.decoder_inputs, codes_to_input(batch.targets,
                                                                        cfg.model.classes))


def test_training_with_decoder_input_noise_learns(tiny_dataset, tmp_path):
    """The noisy-input decoders still lower the clean held-out CE."""
    cfg = tiny_run(tiny_dataset, max_epochs=4, steps_per_epoch=25, lr=1e-2,
                   decoder_input_noise=0.05)
    run = LocalRun(tmp_path / "run", echo=False)
    train(cfg, report=run)
    history = run.history()
    assert history[-1]["heldout_ce"] < history[0]["heldout_ce"] - 0.3


def test_span_mask_covers_the_requested_share_in_spans():
    """About `fraction` of each row is covered, in runs at least `span` long."""
    mask = span_mask(64, 4000, 0.3, 32, torch.Generator().manual_seed(0))
    assert abs(mask.float().mean().item() - 0.3) < 0.02
    edges = mask.int().diff(dim=1)
    starts, ends = (edges == 1).nonzero(), (edges == -1).nonzero()
    row0 = [int(e) - int(s) for s, e in zip(starts[starts[:, 0] == 0, 1],
                                             ends[ends[:, 0] == 0, 1], strict=False)
            if e > s]
    assert min(row0) >= 32


def test_decoder_mask_silences_the_decoders_past_only_in_training_and_decays(tiny_dataset):
    """Masked samples of the decoders' input are 0 (silence), the rest and the encoder's input
    untouched; the share decays linearly to 0 at decoder_mask_steps; held-out batches are clean;
    two ranks get their rows of the one-worker mask."""
    cfg = tiny_run(tiny_dataset, decoder_mask_fraction=0.5, decoder_mask_span=16,
                   decoder_mask_steps=100)
    cfg = replace(cfg, data=replace(cfg.data, batch_per_domain=4, segment_samples=2000))
    data = Dataset.open(tiny_dataset)
    shares = []
    for step in (0, 50, 100):
        batch = draw_batch(cfg, data, step=step, split="train", augment=True)
        changed = batch.decoder_inputs != batch.clean_inputs
        assert torch.equal(batch.decoder_inputs[changed], torch.zeros(int(changed.sum())))
        shares.append((batch.decoder_inputs == 0).float().mean().item())
    assert abs(shares[0] - 0.5) < 0.05 and abs(shares[1] - 0.25) < 0.05 and shares[2] < 0.01
    assert [decoder_mask_fraction(cfg, s) for s in (0, 50, 100, 200)] == [0.5, 0.25, 0.0, 0.0]
    heldout = draw_batch(cfg, data, step=3, split="heldout", augment=False)
    assert torch.equal(heldout.decoder_inputs, heldout.clean_inputs)
    whole = draw_batch(cfg, data, step=3, split="train", augment=True)
    for rank in (0, 1):
        part = draw_batch(cfg, data, step=3, split="train", augment=True, rank=rank,
                          world_size=2)
        rows = [k * 4 + i for k in range(2) for i in range(rank, 4, 2)]
        assert torch.equal(part.decoder_inputs, whole.decoder_inputs[rows])
        assert torch.equal(part.inputs, whole.inputs[rows])


@pytest.mark.parametrize("cutoff", [60.0, 240.0])
def test_input_drift_is_slow_noise_of_the_given_std_and_band_on_the_decoders_past_only(
        tiny_dataset, cutoff):
    """decoder_input_drift adds noise of that std to the decoders' input alone, low-passed at
    decoder_input_drift_hz: the share of its power below f is about atan(f / cutoff) /
    atan(nyquist / cutoff) (white noise: f / nyquist); held-out batches are clean; two ranks get
    their rows of the one-worker drift."""
    cfg = tiny_run(tiny_dataset, decoder_input_drift=0.05, decoder_input_drift_hz=cutoff)
    cfg = replace(cfg, data=replace(cfg.data, batch_per_domain=4, segment_samples=4000))
    data = Dataset.open(tiny_dataset)
    batch = draw_batch(cfg, data, step=0, split="train", augment=True)
    drift = (batch.decoder_inputs - batch.clean_inputs).double()
    assert abs(drift.std().item() - 0.05) < 0.01
    power = torch.fft.rfft(drift - drift.mean(-1, keepdim=True)).abs().square().sum(0)
    hz = torch.fft.rfftfreq(drift.shape[-1], 1 / data.sample_rate)
    share = (power[(hz > 0) & (hz < 120)].sum() / power[hz > 0].sum()).item()
    expected = math.atan(120 / cutoff) / math.atan(data.sample_rate / 2 / cutoff)
    assert abs(share - expected) < 0.1, (share, expected)
    assert torch.equal(batch.inputs, draw_batch(replace(cfg, train=replace(
        cfg.train, decoder_input_drift=0.0)), data, step=0, split="train", augment=True).inputs)
    heldout = draw_batch(cfg, data, step=3, split="heldout", augment=False)
    assert torch.equal(heldout.decoder_inputs, heldout.clean_inputs)
    part = draw_batch(cfg, data, step=0, split="train", augment=True, rank=1, world_size=2)
    assert torch.equal(part.decoder_inputs, batch.decoder_inputs[[1, 3, 5, 7]])


def test_own_draws_replace_their_share_of_the_past_and_leave_masked_spans_silent(tiny_dataset):
    """With decoder_self_inputs 0.5, about half of the unmasked past is the decoders' own draws
    (valid codes, mostly not the true ones for an untrained decoder), masked spans stay 0 and
    the encoder's input and the targets are untouched."""
    cfg = tiny_run(tiny_dataset, decoder_self_inputs=0.5, decoder_mask_fraction=0.25,
                   decoder_mask_span=16)
    cfg = replace(cfg, data=replace(cfg.data, segment_samples=2000))
    trainer = Trainer(cfg, Dataset.open(tiny_dataset))
    batch = draw_batch(cfg, trainer.data, step=0, split="train", augment=True)
    torch.manual_seed(0)
    inputs = trainer.with_own_draws(batch)
    masked = batch.decoder_inputs == 0
    assert masked.float().mean() > 0.1 and torch.equal(inputs[masked], batch.decoder_inputs[masked])
    codes = (inputs[~masked] + 0.5) * (cfg.model.classes - 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.min() >= 0
    swapped = (inputs != batch.decoder_inputs)[~masked].float().mean().item()
    assert 0.35 < swapped <= 0.52


def test_one_step_draws_sample_each_decoders_distribution(tiny_dataset):
    """The draws are samples of softmax(logits) at every position: their mean log-probability
    is minus the distributions' mean entropy, and they are not the most likely class alone."""
    cfg = tiny_run(tiny_dataset)
    trainer = Trainer(cfg, Dataset.open(tiny_dataset))
    autoencoder = trainer.model.autoencoder
    with torch.no_grad():
        for decoder in autoencoder.decoders.values():
            decoder.head_out.weight.mul_(30)  # peaked, unequal distributions
    batch = draw_batch(cfg, trainer.data, step=0, split="train", augment=False)
    with torch.no_grad():
        z = autoencoder.encoder(batch.inputs)
        logp = torch.cat([logits for logits, _ in autoencoder.teacher_forced(
            z, batch.targets)]).float().log_softmax(1)  # (B, classes, T)
    torch.manual_seed(0)
    draws = torch.stack([autoencoder.one_step_draws(z, batch.targets) for _ in range(50)])
    drawn = logp.gather(1, draws.transpose(0, 1)).mean()  # (B, 50, T) log-probabilities
    entropy = -(logp.exp() * logp).sum(1).mean()
    assert 0.5 < entropy < 4
    assert abs(drawn + entropy) < 0.05
    assert (draws != logp.argmax(1)).float().mean() > 0.2


def test_splice_continues_chosen_rows_as_their_partners_from_the_cut():
    """Before the crossfade a spliced row is its own audio, from the cut on its partner's; rows
    not chosen are untouched."""
    audio, partners = torch.randn(3, 100), torch.randn(3, 100)
    cuts, chosen = torch.tensor([40, 50, 60]), torch.tensor([True, False, True])
    out = splice(audio, partners, cuts, chosen, fade=10)
    assert torch.equal(out[1], audio[1])
    for row, cut in ((0, 40), (2, 60)):
        assert torch.equal(out[row, :cut - 10], audio[row, :cut - 10])
        torch.testing.assert_close(out[row, cut:], partners[row, cut:])
        middle = out[row, cut - 10:cut]
        low = torch.minimum(audio[row, cut - 10:cut], partners[row, cut - 10:cut])
        high = torch.maximum(audio[row, cut - 10:cut], partners[row, cut - 10:cut])
        assert bool(((middle >= low - 1e-6) & (middle <= high + 1e-6)).all())


def test_splices_are_drawn_for_the_global_batch_and_only_in_training(tiny_dataset):
    """With `splice_fraction` 1 every training row differs from the unspliced batch in its
    second half only; held-out batches are unspliced; two ranks get their rows of the
    one-worker batch; with 0 nothing extra is drawn (the batch is as before)."""
    cfg = tiny_run(tiny_dataset, splice_fraction=1.0, aug_semitones=0.0)
    cfg = replace(cfg, data=replace(cfg.data, batch_per_domain=4, segment_samples=2000))
    data = Dataset.open(tiny_dataset)
    plain_cfg = replace(cfg, train=replace(cfg.train, splice_fraction=0.0))
    spliced = draw_batch(cfg, data, step=5, split="train", augment=True)
    plain = draw_batch(plain_cfg, data, step=5, split="train", augment=True)
    assert torch.equal(spliced.targets[:, :400], plain.targets[:, :400])
    assert not torch.equal(spliced.targets[:, 1600:], plain.targets[:, 1600:])
    assert torch.equal(spliced.inputs, spliced.clean_inputs)  # encoder sees the splice too
    heldout = draw_batch(cfg, data, step=5, split="heldout", augment=False)
    assert torch.equal(heldout.targets, draw_batch(plain_cfg, data, step=5, split="heldout",
                                                   augment=False).targets)
    for rank in (0, 1):
        part = draw_batch(cfg, data, step=5, split="train", augment=True, rank=rank,
                          world_size=2)
        rows = [k * 4 + i for k in range(2) for i in range(rank, 4, 2)]
        assert torch.equal(part.targets, spliced.targets[rows])


def test_the_cosine_schedule_anneals_over_the_budget_and_the_step_schedule_is_the_papers():
    """"cosine": lr at the start, half at half the time budget (or of the steps, without one),
    0 at its end and after; "step": lr * 0.995 ** (step // 1000)."""
    timed = tiny_run("data", lr=1e-3, lr_schedule="cosine", max_minutes=10.0)
    assert learning_rate(timed, 0, 0.0) == pytest.approx(1e-3)
    assert learning_rate(timed, 5, 300.0) == pytest.approx(5e-4)
    assert learning_rate(timed, 9, 600.0) == learning_rate(timed, 9, 900.0) == pytest.approx(0)
    by_steps = tiny_run("data", lr=1e-3, lr_schedule="cosine", max_epochs=2, steps_per_epoch=3)
    assert learning_rate(by_steps, 3, 1e6) == pytest.approx(5e-4)
    paper_like = tiny_run("data", lr=1e-3)
    assert learning_rate(paper_like, 2999, 1e6) == pytest.approx(1e-3 * 0.995 ** 2)


def test_the_moving_average_is_what_generation_loads_and_a_resume_continues_it(tiny_dataset,
                                                                                tmp_path):
    """With train.ema_decay the checkpoint keeps the averaged weights, load_model returns them
    (not the trained ones), the held-out figures report both CEs, and N + N resumed steps give
    the same average as 2N straight."""
    cfg = tiny_run(tiny_dataset, ema_decay=0.9, max_epochs=2)
    straight = LocalRun(tmp_path / "straight", echo=False)
    done = train(cfg, report=straight)
    split = LocalRun(tmp_path / "split", echo=False)
    train(replace(cfg, train=replace(cfg.train, max_epochs=1)), report=split)
    resumed = train(cfg, report=split, resume=split.checkpoint)
    for name, value in done.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[name]), name
    model, _ = load_model(straight.checkpoint)
    averaged, trained = done.ema.module.state_dict(), done.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, averaged[name]), name
    assert any(not torch.equal(averaged[k], trained[k]) for k in trained)
    last = straight.history()[-1]
    assert last["heldout_ce_trained"] != last["heldout_ce"]


def test_the_uniform_confusion_target_is_bounded_and_drives_predictions_to_uniform():
    """"max_ce" rewards a confidently wrong confusion net without bound; "uniform" is at least
    log K, reached by the uniform prediction, which descending on it approaches."""
    labels = torch.tensor([0, 1, 2])
    wrong = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert confusion_penalty(100 * wrong, labels, "max_ce") < confusion_penalty(
        10 * wrong, labels, "max_ce") < -9
    assert confusion_penalty(100 * wrong, labels, "uniform") > math.log(3)
    assert confusion_penalty(torch.zeros(3, 3), labels, "uniform") == pytest.approx(math.log(3))
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(0)).requires_grad_()
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(200):
        optimizer.zero_grad()
        confusion_penalty(logits, labels, "uniform").backward()
        optimizer.step()
    torch.testing.assert_close(logits.softmax(-1), torch.full((3, 3), 1 / 3), atol=1e-3,
                               rtol=0)


def test_an_unknown_schedule_target_or_precision_is_refused_naming_the_field():
    for field, bad in (("lr_schedule", "linear"), ("confusion_target", "kl"),
                       ("precision", "fp16"), ("ema_decay", 1.0)):
        with pytest.raises(ValueError, match=f"train.{field}"):
            TrainConfig(**{field: bad})


@pytest.mark.slow
def test_the_compiled_step_computes_the_plain_steps_loss_and_gradients(tiny_dataset):
    """train.compile: the autoencoder's losses and every gradient, content head included,
    equal the eager step's from the same weights and batch (float rounding apart)."""
    cfg = tiny_run(tiny_dataset, confusion_lambda=0.1)
    cfg = replace(cfg, model=replace(cfg.model, content_head=True),
                  train=replace(cfg.train, content_loss_weight=1.0))
    data = Dataset.open(tiny_dataset)
    batch = draw_batch(cfg, data, 0, "train", augment=True)
    results = []
    for compiled in (False, True):
        trainer = Trainer(replace(cfg, train=replace(cfg.train, compile=compiled)), data)
        losses = trainer.autoencoder_losses(batch.inputs, batch.targets, batch.decoder_inputs,
                                            batch.labels)
        losses[0].backward()
        results.append(([v.item() for v in losses],
                        {k: p.grad.clone() for k, p in trainer.model.autoencoder
                         .named_parameters()}))
    (plain, plain_grads), (fast, fast_grads) = results
    assert fast == pytest.approx(plain, rel=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_time_budget_ends_training_at_the_step_that_spends_it(tiny_dataset, tmp_path):
    """A 3-second budget in epochs of 10,000 steps stops at the first step past 3 s: one
    report of the steps done, not a whole epoch."""
    run = LocalRun(tmp_path / "run", echo=False)
    train(tiny_run(tiny_dataset, max_minutes=0.05, steps_per_epoch=10_000, max_epochs=5),
          report=run)
    (report,) = run.history()
    per_step = report["elapsed_s"] / report["step"]
    assert 0 < report["step"] < 10_000 and 3.0 <= report["elapsed_s"] < 3.0 + 2 * per_step


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(tiny_dataset, capsys):
    """A decoder of 40,000 channels needs hundreds of GiB: exit 2 at once, saying how much is
    needed and available, instead of the allocator's error."""
    assert main(["train", "--data", str(tiny_dataset), "--out", str(tiny_dataset.parent / "big"),
                 "--set", "model.decoder.residual_channels=40000", "--set",
                 "model.decoder.gate_channels=80000"]) == 2
    err = capsys.readouterr().err
    assert "training needs at least" in err and "GiB are available" in err
    assert not (tiny_dataset.parent / "big").exists()
