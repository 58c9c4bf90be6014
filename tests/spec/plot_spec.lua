-- cbnet.plot's charts, read back as SVG text.
local plot = require "cbnet.plot"

local function x_tick_labels(svg)
  local labels = {}
  for label in svg:gmatch('<text x="[%d.]+" y="%d+" text%-anchor="middle">([%d.]+)</text>') do
    labels[#labels + 1] = label
  end
  return labels
end

describe("plot.line", function()
  it("puts whole-number ticks on an epoch axis, even for 1 or 2 epochs", function()
    local two = plot.line{series = {{name = "a", x = {1, 2}, y = {0.1, 0.2}}}}
    assert.same({"1", "2"}, x_tick_labels(two))
    local one = plot.line{series = {{name = "a", x = {1}, y = {0.5}}}}
    assert.same({"1"}, x_tick_labels(one))
    local fractions = plot.line{series = {{name = "a", x = {0.5, 1.5}, y = {0, 1}}}}
    assert.truthy(fractions:find(">1.0<", 1, true))
  end)

  it("draws identical series distinguishable, and error bars when given", function()
    local same = {x = {1, 2, 3}, y = {0.3, 0.4, 0.5}}
    local svg = plot.line{series = {{name = "beta 0.5", x = same.x, y = same.y},
                                    {name = "beta 0.1", x = same.x, y = same.y, err = {0.01, 0.02, 0}}}}
    local dashes = {}
    for d in svg:gmatch('<polyline [^>]*stroke%-dasharray="([^"]*)"') do dashes[#dashes + 1] = d end
    assert.equal(2, #dashes)
    assert.are_not.equal(dashes[1], dashes[2])
    assert.truthy(svg:find("<circle", 1, true) and svg:find("<rect x=", 1, true)) -- two marker shapes
    local _, bars = svg:gsub('<path d="M[%d.]+ [%d.]+V', "")
    assert.equal(2, bars) -- error bars where err > 0
  end)
end)

describe("plot.bars", function()
  it("fits its legend inside the picture and labels classes with their counts", function()
    local classes = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    local v = {0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0}
    local svg = plot.bars{categories = classes, notes = {"n=5000", "n=2997"},
      series = {{name = "CE", values = v}, {name = "CB focal beta=0.9999 (a long name)", values = v}}}
    local width = tonumber(svg:match('^<svg [^>]*width="(%d+)"'))
    for x, text in svg:gmatch('<text x="(%d+)" y="%d+" dominant%-baseline="middle">([^<]*)</text>') do
      assert.is_true(tonumber(x) + 7 * #text <= width, text)
    end
    assert.truthy(svg:find(">n=2997<", 1, true))
  end)
end)
