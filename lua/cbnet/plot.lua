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

-- Each series has a colour, a dash pattern and a marker shape, so series
-- that coincide (identical runs) stay visible under each other.
local DASHES = {"", "6 3", "2 3", "8 3 2 3", "1 2"}
local MARKERS = {"circle", "square", "triangle", "diamond"}

local function style(i)
  return PALETTE[(i - 1) % #PALETTE + 1], DASHES[(i - 1) % #DASHES + 1], MARKERS[(i - 1) % #MARKERS + 1]
end

local function marker(kind, x, y, color)
  if kind == "circle" then return ('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>'):format(x, y, color) end
  if kind == "square" then return ('<rect x="%.1f" y="%.1f" width="6" height="6" fill="%s"/>'):format(x - 3, y - 3, color) end
  if kind == "triangle" then
    return ('<path d="M%.1f %.1fl3.5 6h-7z" fill="%s"/>'):format(x, y - 4, color)
  end
  return ('<path d="M%.1f %.1fl4 4l-4 4l-4 -4z" fill="%s"/>'):format(x, y - 4, color)
end

-- The legend under the plot, in rows that wrap within the chart's width.
local LEGEND_ROW = 20
local function legend_rows(names, width)
  local rows, used = 1, 0
  for _, name in ipairs(names) do
    local item = 40 + 7 * #tostring(name)
    if used > 0 and used + item > width then rows, used = rows + 1, 0 end
    used = used + item
  end
  return rows
end

local function legend(svg, box, names, lines)
  local x, y = box.left, box.top + box.ph + 60 + box.extra
  for i, name in ipairs(names) do
    local item = 40 + 7 * #tostring(name)
    if x > box.left and x + item > box.left + box.pw then x, y = box.left, y + LEGEND_ROW end
    local color, dash, shape = style(i)
    if lines then
      svg[#svg + 1] = ('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2" stroke-dasharray="%s"/>')
        :format(x, y, x + 22, y, color, dash)
      svg[#svg + 1] = marker(shape, x + 11, y, color)
    else
      svg[#svg + 1] = ('<rect x="%d" y="%d" width="14" height="10" fill="%s"/>'):format(x, y - 5, color)
    end
    svg[#svg + 1] = ('<text x="%d" y="%d" dominant-baseline="middle">%s</text>'):format(x + 28, y, escape(name))
    x = x + item
  end
end

-- The frame shared by both charts: title, axes, y grid and ticks, labels,
-- and room under the x labels for the legend (and notes under categories).
local function frame(o, ylow, yhigh, names, extra_bottom)
  local w = o.width or 640
  local left, right, top = 70, 20, 40
  local pw = w - left - right
  local bottom = 64 + (extra_bottom or 0) + legend_rows(names, pw) * LEGEND_ROW
  local h = (o.height or 360) + bottom
  local ph = h - top - bottom
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
  svg[#svg + 1] = ('<text x="%g" y="%d" text-anchor="middle">%s</text>'):format(left + pw / 2,
    top + ph + 36 + (extra_bottom or 0), escape(o.xlabel or ""))
  svg[#svg + 1] = ('<text x="16" y="%g" text-anchor="middle" transform="rotate(-90 16 %g)">%s</text>'):format(
    top + ph / 2, top + ph / 2, escape(o.ylabel or ""))
  return svg, {left = left, top = top, pw = pw, ph = ph, ymap = ymap, w = w, extra = extra_bottom or 0}
end

local function range(series, field, err)
  local low, high = math.huge, -math.huge
  for _, s in ipairs(series) do
    for k, v in ipairs(s[field]) do
      local e = err and s.err and s.err[k] or 0
      if v == v then low, high = math.min(low, v - e), math.max(high, v + e) end
    end
  end
  if low == math.huge then low, high = 0, 1 end
  return low, high
end

local function error_bar(svg, x, y_low, y_high, color)
  svg[#svg + 1] = ('<path d="M%.1f %.1fV%.1fM%.1f %.1fh8M%.1f %.1fh8" stroke="%s" fill="none"/>'):format(
    x, y_low, y_high, x - 4, y_low, x - 4, y_high, color)
end

-- x ticks: round values; on an axis of whole numbers (epochs), whole
-- numbers only, and a single point gets an axis around it.
local function x_axis(series)
  local xlow, xhigh = range(series, "x")
  local integers = true
  for _, s in ipairs(series) do
    for _, v in ipairs(s.x) do integers = integers and math.type(v) == "integer" end
  end
  if xlow == xhigh then xlow, xhigh = xlow - 0.5, xhigh + 0.5 end
  local ticks, step = plot.ticks(xlow, xhigh, 8)
  if integers and step < 1 then
    ticks, step = {}, 1
    for v = math.ceil(xlow), math.floor(xhigh) do ticks[#ticks + 1] = v end
  end
  if not integers then xlow, xhigh = math.min(xlow, ticks[1]), math.max(xhigh, ticks[#ticks]) end
  return xlow, xhigh, ticks, step
end

--- A line chart of series {name, x = {...}, y = {...}[, err = {...}]} (err:
-- an error bar of +- err[k] at each point, e.g. the std over seeds);
-- options title, xlabel, ylabel, ymin, ymax, width, height.
function plot.line(o)
  assert(o.series and #o.series > 0, "plot.line: needs series")
  local ylow, yhigh = range(o.series, "y", true)
  local names = {}
  for i, s in ipairs(o.series) do names[i] = s.name end
  local svg, box = frame(o, o.ymin or ylow, o.ymax or yhigh, names)
  local xlow, xhigh, xticks, xstep = x_axis(o.series)
  local function xmap(v) return box.left + 10 + (v - xlow) / (xhigh - xlow) * (box.pw - 20) end
  for _, v in ipairs(xticks) do
    local x = xmap(v)
    svg[#svg + 1] = ('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>'):format(x, box.top + box.ph,
      x, box.top + box.ph + 5)
    svg[#svg + 1] = ('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(x, box.top + box.ph + 18,
      tick_label(v, xstep))
  end
  for i, s in ipairs(o.series) do
    local color, dash, shape = style(i)
    local points, marks = {}, {}
    for k = 1, #s.x do
      if s.y[k] == s.y[k] then
        local px, py = xmap(s.x[k]), box.ymap(s.y[k])
        points[#points + 1] = ("%.1f,%.1f"):format(px, py)
        marks[#marks + 1] = marker(shape, px, py, color)
        local e = s.err and s.err[k]
        if e and e == e and e > 0 then error_bar(marks, px, box.ymap(s.y[k] - e), box.ymap(s.y[k] + e), color) end
      end
    end
    svg[#svg + 1] = ('<polyline fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s" points="%s"/>')
      :format(color, dash, table.concat(points, " "))
    table.move(marks, 1, #marks, #svg + 1, svg)
  end
  legend(svg, box, names, true)
  svg[#svg + 1] = "</svg>"
  return table.concat(svg, "\n") .. "\n"
end

--- Grouped bars: one group per category, one bar per series {name, values
-- [, err]}; notes (optional) is a second label line under each category
-- (e.g. its training count).
function plot.bars(o)
  assert(o.series and #o.series > 0 and o.categories, "plot.bars: needs categories and series")
  local _, yhigh = range(o.series, "values", true)
  o.width = o.width or math.max(640, 70 + 72 * #o.categories)
  local names = {}
  for i, s in ipairs(o.series) do names[i] = s.name end
  local svg, box = frame(o, o.ymin or 0, o.ymax or yhigh, names, o.notes and 14 or 0)
  local groups, per = #o.categories, #o.series
  local slot = box.pw / groups
  local bar = slot * 0.8 / per
  for g, category in ipairs(o.categories) do
    local x0 = box.left + (g - 1) * slot + slot * 0.1
    for s, series in ipairs(o.series) do
      local color = style(s)
      local v = series.values[g] or 0
      local y = box.ymap(v)
      svg[#svg + 1] = ('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>'):format(
        x0 + (s - 1) * bar, y, bar * 0.95, box.top + box.ph - y, color,
        escape(series.name), escape(category), ("%.4f"):format(v))
      local e = series.err and series.err[g]
      if e and e == e and e > 0 then
        error_bar(svg, x0 + (s - 0.5) * bar, box.ymap(v - e), box.ymap(v + e), "black")
      end
    end
    svg[#svg + 1] = ('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(x0 + slot * 0.4,
      box.top + box.ph + 18, escape(category))
    if o.notes then
      svg[#svg + 1] = ('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>'):format(
        x0 + slot * 0.4, box.top + box.ph + 32, escape(o.notes[g] or ""))
    end
  end
  legend(svg, box, names, false)
  svg[#svg + 1] = "</svg>"
  return table.concat(svg, "\n") .. "\n"
end

function plot.save(path, svg) report.write_atomic(path, svg) end

return plot
