"""Data sets: the embedded Shapes, CIFAR-10/100, STL-10, ImageNet, Places205, any image folder, and the
two-view augmentation computed a batch at a time."""
