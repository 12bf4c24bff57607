# tessera_add_generator(NAME <name> MODEL <registered model> TARGETS <targets...> [PARAMS key=value ...])
#
# Modelled on Halide's add_halide_library: at build time, runs
# tessera_generator to compile a registered model (include/tessera/models.h)
# for each target, and makes a static library <name> with a header <name>.h
# (class tessera_aot::<name>: typed Inputs/Outputs, run(), variant()).
# The library links the Halide runtime headers and Tessera's thread pool
# (runtime/thread_pool.h), and with the CUDA toolkit tessera_cuda_plan (the
# executor of GPU variants), not libHalide.
function(tessera_add_generator)
  cmake_parse_arguments(ARG "" "NAME;MODEL" "TARGETS;PARAMS" ${ARGN})
  if(NOT ARG_NAME OR NOT ARG_MODEL OR NOT ARG_TARGETS)
    message(FATAL_ERROR "tessera_add_generator: NAME, MODEL and TARGETS are required")
  endif()
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME}.generated)
  set(runtime ${dir}/${ARG_NAME}_runtime.o)
  set(variants)
  foreach(t IN LISTS ARG_TARGETS)
    string(MAKE_C_IDENTIFIER "${t}" id)
    list(APPEND variants ${dir}/${ARG_NAME}_${id}.a)
  endforeach()
  set(param_args)
  foreach(p IN LISTS ARG_PARAMS)
    list(APPEND param_args --param ${p})
  endforeach()
  list(JOIN ARG_TARGETS "," targets)
  add_custom_command(
    OUTPUT ${dir}/${ARG_NAME}.h ${dir}/${ARG_NAME}.cpp ${runtime} ${variants}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${dir}
    COMMAND tessera_generator --model ${ARG_MODEL} --name ${ARG_NAME} --out ${dir} --targets ${targets} ${param_args}
    DEPENDS tessera_generator
    COMMENT "tessera_generator: ${ARG_NAME} (${ARG_MODEL} for ${targets})"
    VERBATIM)
  set_source_files_properties(${runtime} PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
  # The runner and the one Halide runtime; each variant is a library of one object per kernel.
  add_library(${ARG_NAME} STATIC ${dir}/${ARG_NAME}.cpp ${runtime})
  target_include_directories(${ARG_NAME} PUBLIC ${dir})
  target_link_libraries(${ARG_NAME} PUBLIC ${variants} tessera_thread_pool Halide::Runtime Threads::Threads ${CMAKE_DL_LIBS})
  # With the CUDA toolkit, GPU variants run on tessera_cuda_plan's PlanExecutor
  # (cudart, cuBLASLt; no libHalide). Without it they are compiled but cannot run.
  if(TARGET tessera_cuda_plan)
    target_link_libraries(${ARG_NAME} PUBLIC tessera_cuda_plan)
    target_compile_definitions(${ARG_NAME} PRIVATE TESSERA_AOT_CUDA=1)
  endif()
endfunction()
