import pytest
import timm
import torch
from safetensors.torch import save_file

from mmfw.encoders import LeNetEncoder, TimmEncoder


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 1, 40, 64), (2, 3, 17, 23)])
def test_lenet_any_input_size(shape):
    encoder = LeNetEncoder(shape[1], channels=(4, 8), out_dim=12)
    out = encoder(torch.randn(shape))
    assert out.shape == (2, 12) and torch.isfinite(out).all()


def test_lenet_tokens():
    encoder = LeNetEncoder(1, channels=(4, 8), out_dim=12, returns_tokens=True)
    assert encoder(torch.randn(2, 1, 28, 28)).shape == (2, 7 * 7, 12)


def test_timm_encoder_pooled_features():
    encoder = TimmEncoder("resnet18", in_chans=1)
    assert encoder.out_dim == 512
    assert encoder(torch.randn(2, 1, 28, 28)).shape == (2, 512)


def test_timm_pretrained_from_local_file(tmp_path):
    """No hub here: pretrained weights come from a local file and land in the backbone unchanged."""
    reference = timm.create_model("resnet18", num_classes=0)
    torch.nn.init.normal_(reference.conv1.weight)
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    encoder = TimmEncoder("resnet18", in_chans=3, pretrained=True, checkpoint_path=str(path))
    torch.testing.assert_close(encoder.backbone.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(encoder.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_timm_pretrained_adapts_stem_to_one_channel(tmp_path):
    reference = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    encoder = TimmEncoder("resnet18", in_chans=1, pretrained=True, checkpoint_path=str(path))
    # timm sums the RGB stem filters for a 1-channel input.
    torch.testing.assert_close(encoder.backbone.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))


def test_timm_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        TimmEncoder("resnet18", pretrained=True, checkpoint_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="pretrained=true"):
        TimmEncoder("resnet18", checkpoint_path=str(tmp_path / "x.pth"))
