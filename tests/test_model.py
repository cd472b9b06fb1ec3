"""GPT-NeoX against transformers' GPTNeoXForCausalLM (the reference), and Hugging Face folders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from debias.errors import UserError
from debias.model import GPTNeoX, GPTNeoXConfig

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
PYTHIA_70M = dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048)


def reference_model(shape: dict, hidden_act: str = "gelu", parallel: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPTNeoXConfig(
        **shape, rotary_pct=0.25, hidden_act=hidden_act, use_parallel_residual=parallel, attn_implementation="sdpa"
    )
    model = transformers.GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():  # transformers zero-inits biases and sets LayerNorms to 1: randomise them so they count
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def token_ids(vocab: int, batch: int = 2, length: int = 24) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def reference_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def our_logits(model, ids):
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize(
    "shape, hidden_act, parallel, gelu",
    [
        (TINY, "gelu", True, "exact"),
        (TINY, "gelu_new", True, "tanh"),
        (TINY, "gelu_pytorch_tanh", False, "tanh"),
        (PYTHIA_70M, "gelu", True, "exact"),
    ],
    ids=["tiny-exact", "tiny-tanh", "tiny-sequential", "pythia-70m"],
)
def test_logits_match_transformers_both_ways(tmp_path, shape, hidden_act, parallel, gelu):
    reference = reference_model(shape, hidden_act, parallel)
    reference.save_pretrained(tmp_path / "hf")
    ids = token_ids(shape["vocab_size"])
    expected = reference_logits(reference, ids)

    ours = GPTNeoX.from_pretrained(tmp_path / "hf")
    assert ours.config.gelu == gelu and ours.config.rotary_dims == shape["hidden_size"] // shape["num_attention_heads"] // 4
    logits = our_logits(ours, ids)
    assert logits.shape == (*ids.shape, shape["vocab_size"])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)

    ours.save_pretrained(tmp_path / "ours")
    reloaded = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="sdpa").eval()
    torch.testing.assert_close(reference_logits(reloaded, ids), expected, atol=1e-4, rtol=0)


def test_tanh_and_exact_gelu_differ_and_gelu_override(tmp_path):
    reference_model(TINY, "gelu").save_pretrained(tmp_path)
    exact = GPTNeoX.from_pretrained(tmp_path)
    tanh = GPTNeoX.from_pretrained(tmp_path, gelu="tanh")
    assert (exact.config.gelu, tanh.config.gelu) == ("exact", "tanh")
    ids = token_ids(TINY["vocab_size"])
    assert not torch.allclose(our_logits(exact, ids), our_logits(tanh, ids), atol=1e-7, rtol=0)


def test_config_spellings_of_transformers_4_and_5_agree():
    common = dict(model_type="gpt_neox", vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                  num_attention_heads=8, intermediate_size=2048, hidden_act="gelu")
    old = GPTNeoXConfig.from_hf_dict(common | {"rotary_pct": 0.5, "rotary_emb_base": 20000})
    new = GPTNeoXConfig.from_hf_dict(
        common | {"rope_parameters": {"rope_type": "default", "rope_theta": 20000.0, "partial_rotary_factor": 0.5}}
    )
    assert old == new and old.rotary_pct == 0.5 and old.rotary_base == 20000.0
    assert GPTNeoXConfig.from_hf_dict(GPTNeoXConfig(**new.to_dict()).to_hf_dict()) == new


def test_sharded_safetensors(tmp_path):
    reference = reference_model(TINY)
    reference.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("*.safetensors"))) > 2
    ids = token_ids(TINY["vocab_size"])
    torch.testing.assert_close(our_logits(GPTNeoX.from_pretrained(tmp_path), ids), reference_logits(reference, ids), atol=1e-4, rtol=0)


def pythia_style_config(config) -> dict:
    """config.json as the Pythia repositories hold it (transformers 4.24: rotary_pct, rotary_emb_base)."""
    return {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": config.hidden_act,
        "hidden_size": config.hidden_size, "initializer_range": 0.02, "intermediate_size": config.intermediate_size,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox",
        "num_attention_heads": config.num_attention_heads, "num_hidden_layers": config.num_hidden_layers,
        "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
        "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": config.vocab_size,
    }


def legacy_bin_folder(folder, reference, shards: int = 1):
    """A pre-safetensors folder: pytorch_model.bin (or shards + index), fp16, with the buffers
    old transformers versions saved."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(pythia_style_config(reference.config)))
    state = {key.replace("lm_head.", "embed_out."): value.half() for key, value in reference.state_dict().items()}
    for i in range(reference.config.num_hidden_layers):
        state[f"gpt_neox.layers.{i}.attention.bias"] = torch.tril(torch.ones(8, 8, dtype=torch.bool))[None, None]
        state[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        state[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.ones(2)
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    keys, weight_map = sorted(state), {}
    for shard in range(shards):
        name = f"pytorch_model-{shard + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key] for key in keys[shard::shards]}
        torch.save(part, folder / name)
        weight_map |= dict.fromkeys(part, name)
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("shards", [1, 3])
def test_legacy_pytorch_bin_with_buffers(tmp_path, shards):
    reference = reference_model(TINY)
    legacy_bin_folder(tmp_path / "legacy", reference, shards)
    ours = GPTNeoX.from_pretrained(tmp_path / "legacy")
    assert ours.embed_in.weight.dtype == torch.float32  # dtype=None means float32
    ids = token_ids(TINY["vocab_size"])
    expected = reference_logits(reference.half().float(), ids)  # the same fp16-rounded weights
    torch.testing.assert_close(our_logits(ours, ids), expected, atol=1e-4, rtol=0)
    # transformers reads the same pre-safetensors, transformers-4-style folder the same way
    theirs = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "legacy", dtype=torch.float32).eval()
    torch.testing.assert_close(reference_logits(theirs, ids), expected, atol=1e-4, rtol=0)
    assert GPTNeoX.from_pretrained(tmp_path / "legacy", dtype=torch.bfloat16).embed_out.weight.dtype == torch.bfloat16


class CreatesMarkerWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    reference = reference_model(TINY)
    folder = tmp_path / "evil"
    legacy_bin_folder(folder, reference)
    marker = tmp_path / "pwned"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save(state | {"payload": CreatesMarkerWhenUnpickled(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"pytorch_model\.bin: refused to unpickle: .*\(\S*open\)") as err:
        GPTNeoX.from_pretrained(folder)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_non_tensor_entry_is_refused(tmp_path):
    folder = tmp_path / "legacy"
    legacy_bin_folder(folder, reference_model(TINY))
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save(state | {"step": 7}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"pytorch_model\.bin: entry 'step' is a int, not a tensor"):
        GPTNeoX.from_pretrained(folder)


def saved_tiny(tmp_path):
    folder = tmp_path / "model"
    reference_model(TINY).save_pretrained(folder)
    return folder


def rewrite_tensors(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_bad_folders_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        GPTNeoX.from_pretrained(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty/config\.json: not found"):
        GPTNeoX.from_pretrained(tmp_path / "empty")

    folder = saved_tiny(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    with pytest.raises(UserError, match="model_type is 'llama', not 'gpt_neox'"):
        GPTNeoX.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))

    rewrite_tensors(folder, lambda t: t.pop("gpt_neox.layers.1.mlp.dense_4h_to_h.bias"))
    with pytest.raises(UserError, match=r"tensor 'gpt_neox\.layers\.1\.mlp\.dense_4h_to_h\.bias' is missing"):
        GPTNeoX.from_pretrained(folder)


def test_misshaped_and_unexpected_tensors(tmp_path):
    folder = saved_tiny(tmp_path)

    def shrink(tensors):
        tensors["gpt_neox.embed_in.weight"] = tensors["gpt_neox.embed_in.weight"][:50].clone()

    rewrite_tensors(folder, shrink)
    with pytest.raises(UserError, match=r"model\.safetensors: tensor 'gpt_neox\.embed_in\.weight' has shape \(50, 64\), config\.json implies \(96, 64\)"):
        GPTNeoX.from_pretrained(folder)

    folder = saved_tiny(tmp_path / "again")
    rewrite_tensors(folder, lambda t: t.update({"score.weight": torch.zeros(2, 64)}))
    with pytest.raises(UserError, match="unexpected tensor 'score.weight'"):
        GPTNeoX.from_pretrained(folder)


def test_no_weights_and_corrupt_weights(tmp_path):
    folder = saved_tiny(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match=r"model\.safetensors: cannot be read as safetensors"):
        GPTNeoX.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no weights found"):
        GPTNeoX.from_pretrained(folder)


def test_save_pretrained_writes_tokenizer_and_refuses_foreign_folders(tmp_path, neox_tokenizer_path):
    model = GPTNeoX(GPTNeoXConfig(vocab_size=50304, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64))
    folder = model.save_pretrained(tmp_path / "out", tokenizer=neox_tokenizer_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer("The nurse said he").input_ids[-1] == 344  # " he" (docs/facts.md §3)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 0

    # a model loaded from that folder remembers the tokenizer and passes it on
    reloaded = GPTNeoX.from_pretrained(folder)
    reloaded.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / "tokenizer.json").read_bytes() == neox_tokenizer_path.read_bytes()

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="does not hold a model"):
        model.save_pretrained(foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_init_follows_gpt_neox_small_init_and_wang_init():
    config = GPTNeoXConfig(vocab_size=512, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
    model = GPTNeoX(config)
    small, wang = math.sqrt(2 / (5 * 256)), 2 / (4 * math.sqrt(256))
    assert model.layers[0].attention.query_key_value.weight.std().item() == pytest.approx(small, rel=0.05)
    assert model.embed_out.weight.std().item() == pytest.approx(small, rel=0.05)
    assert model.layers[0].mlp.dense_4h_to_h.weight.std().item() == pytest.approx(wang, rel=0.05)
    assert model.layers[3].attention.dense.weight.std().item() == pytest.approx(wang, rel=0.05)
    assert torch.count_nonzero(model.layers[0].attention.query_key_value.bias) == 0


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = GPTNeoX(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128))
    ids = token_ids(64, length=16)

    def grads():
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()).backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.gradient_checkpointing = True
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = GPTNeoX(GPTNeoXConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128)).eval()
    ids = token_ids(64, length=16)
    compiled = torch.compile(model)
    torch.testing.assert_close(our_logits(compiled, ids), our_logits(model, ids), atol=1e-5, rtol=0)
