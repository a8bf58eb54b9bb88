//! End-to-end tests live in tests/; they drive the QEMU guest of rxe-setup/vm.
