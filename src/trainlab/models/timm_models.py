"""``model.name: timm:<name>``: any architecture of the timm library (optional extra ``trainlab[timm]``).

Built with ``pretrained=False`` (nothing is downloaded; use ``model.weights`` for a local file),
the data's input channels and number of classes, and for ViT-style models the data's image size.
"""
from __future__ import annotations

from ..errors import RecipeError, closest
from ..registry import MODELS


def _import_timm():
    try:
        import timm
    except ImportError:
        raise RecipeError("model.name: timm models need the timm package; install trainlab[timm] "
                          "(pip install 'trainlab[timm]')") from None
    return timm


def timm_model(name: str, cfg, info):
    timm = _import_timm()
    if len(info.input_shape) != 3:
        raise RecipeError(f"model.name: timm:{name} takes images (C, H, W), the data gives {list(info.input_shape)}")
    known = timm.list_models()
    if name not in known:
        near = closest(name, known)
        hint = f"; did you mean {', '.join('timm:' + n for n in near)}?" if near else ""
        raise RecipeError(f"model.name: timm has no model {name!r}{hint}")
    kwargs = dict(pretrained=False, num_classes=info.num_classes, in_chans=info.input_shape[0])
    if cfg.dropout:
        kwargs["drop_rate"] = cfg.dropout
    kwargs.update(cfg.options or {})
    try:
        return timm.create_model(name, img_size=tuple(info.input_shape[1:]), **kwargs)
    except TypeError:
        # Convolutional nets take any size and reject img_size.
        return timm.create_model(name, **kwargs)


MODELS.register_prefix("timm:", timm_model, help="any timm model by name (needs trainlab[timm]); "
                       "model.options go to timm.create_model", uses=("dropout",), default_input=(3, 224, 224))
