--- cbnet.report: result files of an experiment run. Everything a run writes
-- goes through write_atomic (a temporary file, every step checked, then a
-- rename), so an interrupted run or a full disk never leaves half a file.
local json = require "cbnet.json"
local core = require "cbnet.core"

local report = {}

--- Writes text to path atomically: afterwards path holds the old content or
-- all of text; a failed write, fsync, close or rename is an error.
function report.write_atomic(path, text)
  local ok, err = pcall(core.write_file_atomic, path, text)
  if not ok then error(err, 2) end
end

function report.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

--- Creates a folder (and its parents).
function report.mkdir(path)
  local ok = os.execute(("mkdir -p '%s'"):format(path:gsub("'", "'\\''")))
  if not ok then error("cannot create folder " .. path, 2) end
  return path
end

function report.write_json(path, value) report.write_atomic(path, json.encode(value, 2) .. "\n") end
function report.read_json(path)
  local text = report.read_file(path)
  return text and json.decode(text)
end

--- A markdown table: header (list of strings), rows (lists of values);
-- numbers are printed with `decimals` places (4 by default).
function report.markdown_table(header, rows, decimals)
  local fmt = "%." .. (decimals or 4) .. "f"
  local function cell(v)
    if v == nil or v ~= v then return "n/a" end -- missing, or NaN (e.g. a class with no samples)
    if math.type(v) == "float" then return fmt:format(v) end
    return tostring(v)
  end
  local cells = {header}
  for _, row in ipairs(rows) do
    local r = {}
    for i = 1, #header do r[i] = cell(row[i]) end
    cells[#cells + 1] = r
  end
  local widths = {}
  for _, r in ipairs(cells) do
    for i, v in ipairs(r) do widths[i] = math.max(widths[i] or 3, utf8.len(tostring(v)) or #tostring(v)) end
  end
  local lines = {}
  for n, r in ipairs(cells) do
    local parts = {}
    for i = 1, #widths do
      local v = tostring(r[i] or "")
      local len = utf8.len(v) or #v -- characters, not bytes ("±")
      parts[i] = (i == 1) and (v .. (" "):rep(widths[i] - len)) or ((" "):rep(widths[i] - len) .. v)
    end
    lines[#lines + 1] = "| " .. table.concat(parts, " | ") .. " |"
    if n == 1 then
      local rule = {}
      for i = 1, #widths do rule[i] = i == 1 and (":" .. ("-"):rep(widths[i] - 1)) or (("-"):rep(widths[i] - 1) .. ":") end
      lines[#lines + 1] = "| " .. table.concat(rule, " | ") .. " |"
    end
  end
  return table.concat(lines, "\n")
end

-- ---- tables and charts of a sweep ----
-- runs: a list of {id = ..., label = ...}; results: result tables by run id
-- (as experiment.train returns them; a missing one is a failed run).

--- The header of a per-class table: first_column, "0 airplane", ..., and
-- "overall" unless overall is false.
function report.per_class_header(first_column, classes, overall)
  local header = {first_column}
  for c, name in ipairs(classes) do header[c + 1] = ("%d %s"):format(c - 1, name) end
  if overall ~= false then header[#header + 1] = "overall" end
  return header
end

--- One table row: label, the per-class values, then overall (if given).
function report.per_class_row(label, per_class, classes, overall)
  local row = {label}
  for c = 1, #classes do row[c + 1] = per_class[c] end
  if overall ~= nil then row[#row + 1] = overall end
  return row
end

--- Markdown: the per-class test accuracy of each run at its best epoch.
function report.best_epoch_table(runs, results, classes)
  local rows = {}
  for _, r in ipairs(runs) do
    local res = results[r.id]
    if res then rows[#rows + 1] = report.per_class_row(r.label, res.best.per_class, classes, res.best.accuracy) end
  end
  return report.markdown_table(report.per_class_header("run", classes), rows)
end

--- Markdown: runs a and b (results, at their best epochs) and b - a per class.
function report.comparison_table(a_label, a, b_label, b, classes)
  local diff = {"difference"}
  for c = 1, #classes do
    local x, y = b.best.per_class[c], a.best.per_class[c]
    diff[c + 1] = (x and y) and x - y or nil
  end
  diff[#diff + 1] = b.best.accuracy - a.best.accuracy
  return report.markdown_table(report.per_class_header("run", classes), {
    report.per_class_row(a_label, a.best.per_class, classes, a.best.accuracy),
    report.per_class_row(b_label, b.best.per_class, classes, b.best.accuracy), diff})
end

--- SVG: the test accuracy of every finished run, epoch by epoch.
function report.learning_curves(path, title, runs, results)
  local series = {}
  for _, r in ipairs(runs) do
    local res = results[r.id]
    if res then
      local x, y = {}, {}
      for _, h in ipairs(res.history) do -- the evaluated epochs (--eval-every)
        if h.test_accuracy then x[#x + 1], y[#y + 1] = h.epoch, h.test_accuracy end
      end
      series[#series + 1] = {name = r.label, x = x, y = y}
    end
  end
  if #series == 0 then return false end
  local plot = require "cbnet.plot" -- plot itself saves through report
  plot.save(path, plot.line{title = title, xlabel = "epoch", ylabel = "test accuracy", ymin = 0,
                            series = series})
  return true
end

--- SVG: per-class accuracy bars of some runs (list of {name, values[,
-- err]}); counts (optional) labels each class with its training images.
function report.per_class_bars(path, title, classes, series, xlabel, counts)
  local plot = require "cbnet.plot"
  local notes
  if counts then
    notes = {}
    for c = 1, #classes do notes[c] = counts[c] and ("n=%d"):format(counts[c]) or "" end
  end
  plot.save(path, plot.bars{title = title, xlabel = xlabel or "class", ylabel = "accuracy", ymax = 1,
                            categories = classes, series = series, notes = notes})
end

--- Markdown: a confusion matrix (rows: true class, columns: predicted;
-- matrix[t][p] counts, as experiment.evaluate returns it).
function report.confusion_table(matrix, classes)
  local header = {"true \\ predicted"}
  for c = 1, #classes do header[c + 1] = tostring(c - 1) end
  local rows = {}
  for t = 1, #classes do
    local row = {("%d %s"):format(t - 1, classes[t])}
    for p = 1, #classes do row[p + 1] = matrix[t][p] end
    rows[t] = row
  end
  return report.markdown_table(header, rows)
end

--- SVG: a confusion matrix as a heat map, each row shaded by the fraction
-- of the true class predicted in each column (the diagonal is per-class
-- accuracy), with the counts written in (for up to 20 classes).
function report.confusion_svg(path, title, matrix, classes)
  local n = #classes
  local cell = math.max(8, math.min(48, 560 // n))
  local left, top = 110, 60
  local size = left + n * cell + 20
  local svg = {('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
    .. 'font-family="sans-serif" font-size="11">'):format(size, top + n * cell + 50, size, top + n * cell + 50),
    ('<rect width="100%%" height="100%%" fill="white"/>'),
    ('<text x="%d" y="22" font-size="15" font-weight="bold" text-anchor="middle">%s</text>'):format(size // 2,
      (title:gsub("[<>&]", {["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;"})))}
  for p = 1, n do
    if n <= 20 then
      svg[#svg + 1] = ('<text x="%d" y="%d" text-anchor="middle">%d</text>'):format(left + (p - 0.5) * cell,
        top - 6, p - 1)
    end
  end
  for t = 1, n do
    local total = 0
    for p = 1, n do total = total + matrix[t][p] end
    for p = 1, n do
      local f = total > 0 and matrix[t][p] / total or 0
      local shade = math.floor(255 * (1 - f) + 0.5)
      svg[#svg + 1] = ('<rect x="%d" y="%d" width="%d" height="%d" fill="rgb(%d,%d,255)"><title>true %s, '
        .. 'predicted %s: %d</title></rect>'):format(left + (p - 1) * cell, top + (t - 1) * cell, cell, cell,
        shade, shade, classes[t], classes[p], matrix[t][p])
      if n <= 20 then
        svg[#svg + 1] = ('<text x="%d" y="%d" text-anchor="middle" dominant-baseline="middle" fill="%s">%d</text>')
          :format(left + (p - 0.5) * cell, top + (t - 0.5) * cell, f > 0.5 and "white" or "black", matrix[t][p])
      end
    end
    if n <= 20 then
      svg[#svg + 1] = ('<text x="%d" y="%d" text-anchor="end" dominant-baseline="middle">%d %s</text>'):format(
        left - 6, top + (t - 0.5) * cell, t - 1, classes[t])
    end
  end
  svg[#svg + 1] = ('<text x="%d" y="%d" text-anchor="middle">predicted class</text>'):format(
    left + n * cell // 2, top + n * cell + 20)
  svg[#svg + 1] = ('<text x="%d" y="%d" text-anchor="middle">rows: true class</text>'):format(left // 2, top - 24)
  svg[#svg + 1] = "</svg>"
  report.write_atomic(path, table.concat(svg, "\n") .. "\n")
end

--- A metrics log: one JSON object per line in OUT/metrics.jsonl, flushed at
-- once, so a crashed or interrupted run keeps every finished epoch.
local Metrics = {}
Metrics.__index = Metrics

function report.metrics(path, append)
  local f, err = io.open(path, append and "ab" or "wb")
  if not f then error(("cannot write %s: %s"):format(path, err), 2) end
  return setmetatable({file = f, path = path}, Metrics)
end

function Metrics:log(record)
  local ok, err = self.file:write(json.encode(record), "\n")
  if ok then ok, err = self.file:flush() end
  if not ok then error(("cannot write %s: %s"):format(self.path, err), 2) end
end

function Metrics:close() self.file:close() end

--- The records of a metrics file (skipping a torn last line).
function report.read_metrics(path)
  local records = {}
  local f = io.open(path, "rb")
  if not f then return records end
  for line in f:lines() do
    local ok, record = pcall(json.decode, line)
    if ok then records[#records + 1] = record end
  end
  f:close()
  return records
end

--- Progress of an epoch on stderr: a line rewritten in place on a terminal
-- (images/s, loss, ETA); nothing until the epoch's summary line otherwise.
local Progress = {}
Progress.__index = Progress

--- Seconds on a monotonic clock.
local now = require("cbnet.core").clock
report.now = now

function report.progress(label, total)
  local core = require "cbnet.core"
  return setmetatable({label = label, total = total, done = 0, images = 0, start = now(),
                       last = 0, tty = core.isatty(2)}, Progress)
end

--- Counts a batch; loss (optional) joins the running mean the line shows.
function Progress:update(batch_images, loss)
  self.done = self.done + 1
  self.images = self.images + batch_images
  if loss then
    self.loss_sum = (self.loss_sum or 0) + loss * batch_images
    self.loss_images = (self.loss_images or 0) + batch_images
  end
  if not self.tty then return end
  local t = now()
  if t - self.last < 0.2 and self.done < self.total then return end
  self.last = t
  local elapsed = math.max(t - self.start, 1e-6)
  local eta = (self.total - self.done) * elapsed / self.done
  local mean = self.loss_images and ("  loss %.4f (mean)"):format(self.loss_sum / self.loss_images) or ""
  io.stderr:write(("\r%s %d/%d  %.0f img/s%s  ETA %ds   "):format(self.label, self.done,
    self.total, self.images / elapsed, mean, math.floor(eta + 0.5)))
  io.stderr:flush()
end

--- Clears the progress line; returns images/s over the epoch.
function Progress:finish()
  if self.tty then io.stderr:write("\r" .. (" "):rep(78) .. "\r") end
  return self.images / math.max(now() - self.start, 1e-6)
end

return report
