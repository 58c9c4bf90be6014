-- docs/api.md is generated from the modules' doc comments: it must be current.
describe("docs/api.md", function()
  it("matches what docs/generate.lua writes now", function()
    local cbnet_bin = os.getenv("CBNET_BIN") or "build/bin/cbnet"
    local p = io.popen("unset LD_PRELOAD; " .. cbnet_bin .. " docs/generate.lua")
    local fresh = p:read("a")
    p:close()
    local f = assert(io.open("docs/api.md", "rb"))
    local committed = f:read("a")
    f:close()
    assert.is_true(fresh == committed,
      "docs/api.md is stale: run build/bin/cbnet docs/generate.lua > docs/api.md")
  end)
end)
