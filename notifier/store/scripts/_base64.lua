-- Helper, included before pop.lua (not run on its own).
-- unbase64(s): the bytes a base64 text stands for (characters outside the alphabet, such as
-- '=' padding and line breaks, are skipped).
local B64 = {}
do
  local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  for i = 1, 64 do B64[string.byte(alphabet, i)] = i - 1 end
end

local function unbase64(s)
  local out, n, bits, count = {}, 0, 0, 0
  for i = 1, #s do
    local v = B64[string.byte(s, i)]
    if v then
      bits, count = bits * 64 + v, count + 1
      if count == 4 then
        n = n + 1
        out[n] = string.char(math.floor(bits / 65536), math.floor(bits / 256) % 256, bits % 256)
        bits, count = 0, 0
      end
    end
  end
  if count == 2 then
    n = n + 1; out[n] = string.char(math.floor(bits / 16))
  elseif count == 3 then
    n = n + 1; out[n] = string.char(math.floor(bits / 1024), math.floor(bits / 4) % 256)
  end
  return table.concat(out)
end
