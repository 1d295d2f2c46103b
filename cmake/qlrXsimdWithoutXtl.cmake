# SPDX-License-Identifier: Apache-2.0
# Include after find_package(xsimd). Debian's xsimd 8.1 exports its INTERFACE target with
# INTERFACE_LINK_LIBRARIES "xtl", but Debian ships no xtl package, so every consumer's link
# line gets a bare `-lxtl` and fails with "cannot find -lxtl". xsimd uses xtl only for its
# optional xtl::xcomplex support, which qlr never enables. When no xtl target exists we drop
# that one entry from xsimd's link interface rather than defining a stand-in `xtl` target:
# a stand-in would claim the name and clash with a real xtl that a consumer may find later.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_qlr_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_qlr_xsimd_links)
    list(REMOVE_ITEM _qlr_xsimd_links xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_qlr_xsimd_links}")
  endif()
  unset(_qlr_xsimd_links)
endif()
