--- cbnet.json: JSON for results, configs and checkpoint metadata.
-- encode(value[, indent]): objects with sorted keys (so files diff cleanly),
-- sequences as arrays, numbers that read back exactly (10 significant
-- digits when they suffice, 17 otherwise; integers as integers), NaN and
-- infinities as null; tables that contain themselves,
-- nesting deeper than 200 and tensors above 2^20 elements are errors.
-- decode(text): strict RFC 8259.
-- (Debian's lua-cjson 2.1.0 was weighed as a replacement: it prints at most
-- 14 significant digits, sorts no keys and does not indent, so configs would
-- neither round-trip integers-as-floats exactly nor diff cleanly.)
local json = {}

local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                 ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function is_array(t)
  local n = #t
  if n == 0 then return next(t) == nil and getmetatable(t) == json.array_mt end
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

--- Marks an empty table to be encoded as [] rather than {}.
json.array_mt = {}
function json.array(t) return setmetatable(t or {}, json.array_mt) end

local MAX_DEPTH, MAX_TENSOR = 200, 1 << 20

local function encode(value, indent, depth, out, open)
  local kind = type(value)
  if depth > MAX_DEPTH then error(("json: nested deeper than %d levels"):format(MAX_DEPTH), 0) end
  if kind == "nil" then out[#out + 1] = "null"
  elseif kind == "boolean" then out[#out + 1] = tostring(value)
  elseif kind == "number" then
    if value ~= value or value == math.huge or value == -math.huge then out[#out + 1] = "null"
    elseif math.type(value) == "integer" then out[#out + 1] = tostring(value)
    elseif value == math.floor(value) and math.abs(value) < 1e15 then
      out[#out + 1] = ("%.1f"):format(value) -- stays a float when read back
    else
      local text = ("%.10g"):format(value) -- short when that is exact, else every digit
      if tonumber(text) ~= value then text = ("%.17g"):format(value) end
      out[#out + 1] = text
    end
  elseif kind == "string" then out[#out + 1] = encode_string(value)
  elseif kind == "table" then
    if open[value] then error("json: cannot encode a table that contains itself", 0) end
    open[value] = true
    local pad = indent and ("\n" .. (" "):rep(indent * (depth + 1))) or ""
    local close = indent and ("\n" .. (" "):rep(indent * depth)) or ""
    local sep = indent and ": " or ":"
    if is_array(value) then
      out[#out + 1] = "["
      for i, v in ipairs(value) do
        out[#out + 1] = (i > 1 and "," or "") .. pad
        encode(v, indent, depth + 1, out, open)
      end
      out[#out + 1] = (#value > 0 and close or "") .. "]"
    else
      local keys = {}
      for k in pairs(value) do
        if type(k) ~= "string" and type(k) ~= "number" then error("json: keys must be strings or numbers", 0) end
        keys[#keys + 1] = tostring(k)
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        local v = value[k]
        if v == nil then v = value[tonumber(k)] end
        out[#out + 1] = (i > 1 and "," or "") .. pad .. encode_string(k) .. sep
        encode(v, indent, depth + 1, out, open)
      end
      out[#out + 1] = (#keys > 0 and close or "") .. "}"
    end
    open[value] = nil
  elseif kind == "userdata" and value.totable then
    if value:numel() > MAX_TENSOR then
      error(("json: a tensor of %d elements is too large for JSON (save it with save_safetensors)")
        :format(value:numel()), 0)
    end
    encode(value:totable(), indent, depth, out, open)
  else error("json: cannot encode a " .. kind, 0) end
end

function json.encode(value, indent)
  if indent ~= nil and (math.type(indent) ~= "integer" or indent < 0 or indent > 16) then
    error("json.encode: indent must be an integer in 0..16, got " .. tostring(indent), 2)
  end
  local out = {}
  encode(value, indent, 0, out, {})
  return table.concat(out)
end

-- ---- decoding ----

local function decode_error(text, pos, what)
  error(("json: %s at character %d"):format(what, pos), 0)
end

local function skip(text, pos) return text:find("[^ \t\r\n]", pos) or #text + 1 end

local decode_value

local function decode_string(text, pos)
  local parts, i = {}, pos + 1
  while true do
    local c = text:sub(i, i)
    if c == "" then decode_error(text, pos, "unterminated string") end
    if c == '"' then return table.concat(parts), i + 1 end
    if c == "\\" then
      local e = text:sub(i + 1, i + 1)
      local simple = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"}
      if simple[e] then parts[#parts + 1] = simple[e]; i = i + 2
      elseif e == "u" then
        local hex = text:sub(i + 2, i + 5)
        if not hex:match("^%x%x%x%x$") then decode_error(text, i, "bad \\u escape") end
        parts[#parts + 1] = utf8.char(tonumber(hex, 16))
        i = i + 6
      else decode_error(text, i, "bad escape") end
    elseif c:byte() < 32 then decode_error(text, i, "control character in string")
    else parts[#parts + 1] = c; i = i + 1 end
  end
end

function decode_value(text, pos)
  pos = skip(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    local obj = {}
    pos = skip(text, pos + 1)
    if text:sub(pos, pos) == "}" then return obj, pos + 1 end
    while true do
      if text:sub(pos, pos) ~= '"' then decode_error(text, pos, "expected a key") end
      local key
      key, pos = decode_string(text, pos)
      pos = skip(text, pos)
      if text:sub(pos, pos) ~= ":" then decode_error(text, pos, "expected ':'") end
      obj[key], pos = decode_value(text, pos + 1)
      pos = skip(text, pos)
      local d = text:sub(pos, pos)
      if d == "}" then return obj, pos + 1 end
      if d ~= "," then decode_error(text, pos, "expected ',' or '}'") end
      pos = skip(text, pos + 1)
    end
  elseif c == "[" then
    local arr = json.array()
    pos = skip(text, pos + 1)
    if text:sub(pos, pos) == "]" then return arr, pos + 1 end
    while true do
      arr[#arr + 1], pos = decode_value(text, pos)
      pos = skip(text, pos)
      local d = text:sub(pos, pos)
      if d == "]" then return arr, pos + 1 end
      if d ~= "," then decode_error(text, pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then return decode_string(text, pos)
  elseif text:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif text:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif text:sub(pos, pos + 3) == "null" then return nil, pos + 4
  else
    local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or num == "" or num == "-" then decode_error(text, pos, "unexpected character") end
    local value = tonumber(num)
    if not num:find("[.eE]") then value = math.tointeger(value) or value end
    return value, pos + #num
  end
end

function json.decode(text)
  local value, pos = decode_value(text, 1)
  pos = skip(text, pos)
  if pos <= #text then decode_error(text, pos, "text after the value") end
  return value
end

return json
