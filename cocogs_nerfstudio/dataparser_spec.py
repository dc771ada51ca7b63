"""Entry point of the ``deblur-nerf-data`` dataparser (kept tiny: see nerfstudio-1.1.5 pitfalls)."""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from cocogs_nerfstudio.dataparser import DeblurNerfDataParserConfig

deblur_nerf_data = DataParserSpecification(
    config=DeblurNerfDataParserConfig(),
    description="Deblur-NeRF / DoF-NeRF / LLFF layout (poses_bounds.npy, images_K, sparse/0, hold=N)",
)
