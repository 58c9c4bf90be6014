--- cbnet.plot: SVG charts (readable in any browser) for learning curves and
-- per-class results: plot.line{...} and plot.bars{...} return SVG text;
-- plot.save(path, svg) writes it atomically.
--
--   plot.line{title = "Learning curves", xlabel = "epoch", ylabel = "accuracy",
--             series = {{name = "train", x = {1, 2, 3}, y = {0.5, 0.6, 0.7}}, ...}}
--   plot.bars{title = "Per-class accuracy", categories = {"cat", "dog"},
--             series = {{name = "CE", values = {0.8, 0.1}}, ...}}
local report = require "cbnet.report"

local plot = {}

local PALETTE = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"}

local function escape(s)
  return (tostring(s):gsub("[<>&\"]", {["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;"}))
end

--- About `count` round tick values covering [low, high] (steps of 1, 2 or 5 x 10^k).
function plot.ticks(low, high, count)
  if high <= low then high = low + 1 end
  local raw = (high - low) / (count or 5)
  local magnitude = 10 ^ math.floor(math.log(raw, 10))
  local step = magnitude
  for _, m in ipairs{1, 2, 5, 10} do
    if m * magnitude >= raw then step = m * magnitude break end
  end
  local ticks, v = {}, math.ceil(low / step - 1e-9) * step
  while v <= high + step * 1e-9 do
    ticks[#ticks + 1] = math.abs(v) < step * 1e-9 and 0 or v
    v = v + step
  end
  return ticks, step
end

local function tick_label(v, step)
  if step >= 1 and math.abs(v - math.floor(v + 0.5)) < 1e-9 then return ("%d"):format(math.floor(v + 0.5)) end
  local decimals = math.max(0, -math.floor(math.log(step, 10) + 1e-9))
  return ("%." .. decimals .. "f"):format(v)
end

-- The frame shared by both charts: title, axes, y grid and ticks, labels.
local function frame(o, ylow, yhigh)
  local longest = 0
  for _, s in ipairs(o.series) do longest = math.max(longest, #tostring(s.name)) end
  local right = 50 + 7 * longest -- the legend's width, from its longest name
  local w, h = (o.width or 560) + right, o.height or 420
  local left, top, bottom = 70, 40, 55
  local pw, ph = w - left - right, h - top - bottom
  local yticks, ystep = plot.ticks(ylow, yhigh, 6)
  if yticks[#yticks] < yhigh - 1e-12 then yticks[#yticks + 1] = yticks[#yticks] + ystep end
  ylow, yhigh = math.min(ylow, yticks[1]), math.max(yhigh, yticks[#yticks])
  local function ymap(v) return top + ph - (v - ylow) / (yhigh - ylow) * ph end
  local svg = {
    ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
      .. 'font-family="sans-serif" font-size="12">'):format(w, h, w, h),
    ('<rect width="%d" height="%d" fill="white"/>'):format(w, h),
    ('<text x="%g" y="22" font-size="16" text-anchor="middle" font-weight="bold">%s</text>'):format(
      left + pw / 2, escape(o.title or "")),
  }
  for _, v in ipairs(yticks) do
    local y = ymap(v)
    svg[#svg + 1] = ('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>'):format(left, y, left + pw, y)
    svg[#svg + 1] = ('<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>'):format(
      left - 6, y, tick_label(v, ystep))
  end
  svg[#svg + 1] = ('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'):format(left, top, left, top + ph)
  svg[#svg + 1] = ('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'):format(left, top + ph, left + pw, top + ph)
  svg[#svg + 1] = ('<text x="%g" y="%d" text-anchor="middle">%s</text>'):format(left + pw / 2, h - 12,
    escape(o.xlabel or ""))
  svg[#svg + 1] = ('<text x="16" y="%g" text-anchor="middle" transform="rotate(-90 16 %g)">%s</text>'):format(
    top + ph / 2, top + ph / 2, escape(o.ylabel or ""))
  return svg, {left = left, top = top, pw = pw, ph = ph, ymap = ymap, w = w}
end

local function legend(svg, box, names)
  local x = box.left + box.pw + 16
  for i, name in ipairs(names) do
    local y = box.top + 8 + (i - 1) * 20
    svg[#svg + 1] = ('<rect x="%d" y="%d" width="14" height="10" fill="%s"/>'):format(x, y - 5,
      PALETTE[(i - 1) % #PALETTE + 1])
    svg[#svg + 1] = ('<text x="%d" y="%d" dominant-baseline="middle">%s</text>'):format(x + 20, y, escape(name))
  end
end

local function range(series, field)
  local low, high = math.huge, -math.huge
  for _, s in ipairs(series) do
    for _, v in ipairs(s[field]) do
      if v == v then low, high = math.min(low, v), math.max(high, v) end
    end
  end
  if low == math.huge then low, high = 0, 1 end
  return low, high
end

--- A line chart of series {name, x = {...}, y = {...}}; options title,
-- xlabel, ylabel, ymin, ymax, width, height.
function plot.line(o)
  assert(o.series and #o.series > 0, "plot.line: needs series")
  local ylow, yhigh = range(o.series, "y")
  local svg, box = frame(o, o.ymin or ylow, o.ymax or yhigh)
  local xlow, xhigh = range(o.series, "x")
  local xticks, xstep = plot.ticks(xlow, xhigh, 8)
  xlow, xhigh = math.min(xlow, xticks[1]), math.max(xhigh, xticks[#xticks])
  local function xmap(v) return box.left + (v - xlow) / (xhigh - xlow) * box.pw end
  for _, v in ipairs(xticks) do
    local x = xmap(v)
    svg[#svg + 1] = ('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>'):format(x, box.top + box.ph,
      x, box.top + box.ph + 5)
    svg[#svg + 1] = ('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(x, box.top + box.ph + 18,
      tick_label(v, xstep))
  end
  local names = {}
  for i, s in ipairs(o.series) do
    local points = {}
    for k = 1, #s.x do
      if s.y[k] == s.y[k] then points[#points + 1] = ("%.1f,%.1f"):format(xmap(s.x[k]), box.ymap(s.y[k])) end
    end
    local color = PALETTE[(i - 1) % #PALETTE + 1]
    svg[#svg + 1] = ('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'):format(color,
      table.concat(points, " "))
    for _, p in ipairs(points) do
      local px, py = p:match("([^,]+),(.+)")
      svg[#svg + 1] = ('<circle cx="%s" cy="%s" r="2.5" fill="%s"/>'):format(px, py, color)
    end
    names[i] = s.name
  end
  legend(svg, box, names)
  svg[#svg + 1] = "</svg>"
  return table.concat(svg, "\n") .. "\n"
end

--- Grouped bars: one group per category, one bar per series {name, values}.
function plot.bars(o)
  assert(o.series and #o.series > 0 and o.categories, "plot.bars: needs categories and series")
  local _, yhigh = range(o.series, "values")
  o.width = o.width or math.max(560, 70 + 80 * #o.categories) -- room for the labels
  local svg, box = frame(o, o.ymin or 0, o.ymax or yhigh)
  local groups, per = #o.categories, #o.series
  local slot = box.pw / groups
  local bar = slot * 0.8 / per
  for g, category in ipairs(o.categories) do
    local x0 = box.left + (g - 1) * slot + slot * 0.1
    for s, series in ipairs(o.series) do
      local v = series.values[g] or 0
      local y = box.ymap(v)
      svg[#svg + 1] = ('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>'):format(
        x0 + (s - 1) * bar, y, bar * 0.95, box.top + box.ph - y, PALETTE[(s - 1) % #PALETTE + 1],
        escape(series.name), escape(category), ("%.4f"):format(v))
    end
    svg[#svg + 1] = ('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(x0 + slot * 0.4,
      box.top + box.ph + 18, escape(category))
  end
  local names = {}
  for i, s in ipairs(o.series) do names[i] = s.name end
  legend(svg, box, names)
  svg[#svg + 1] = "</svg>"
  return table.concat(svg, "\n") .. "\n"
end

function plot.save(path, svg) report.write_atomic(path, svg) end

return plot
