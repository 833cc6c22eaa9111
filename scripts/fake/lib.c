/* Body of every other synthetic driver library: a real ELF shared object. */
int nvhook_fake_symbol(void) { return 42; }
