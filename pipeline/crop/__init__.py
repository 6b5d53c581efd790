"""Face-framed portrait crops from full-body photos and masks (`pipeline crop-baidu`)."""
