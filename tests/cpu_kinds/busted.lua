-- busted's options for running specs under qemu-user (tests/cpu_kinds/specs.sh):
-- the repository's .busted without its `lua = "lua5.4"`, which would make
-- busted start a new interpreter outside the emulation.
return {
  default = {
    lpath = "lua/?.lua;lua/?/init.lua;tests/spec/?.lua",
    cpath = "build/lib/?.so",
  },
}
