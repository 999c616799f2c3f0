# Writes OUT: a C++ header holding the bytes of IN (the compiled tc program) as
# cnf::ipip::detail::ipip_tc_object. Run with cmake -DIN=... -DOUT=... -P embed.cmake.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}" "// Generated from ipip_tc.bpf.c by embed.cmake; do not edit.\n#pragma once\nnamespace cnf::ipip::detail {\ninline constexpr unsigned char ipip_tc_object[] = {\n${bytes}\n};\n}  // namespace cnf::ipip::detail\n")
